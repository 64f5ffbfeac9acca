"""Trained networks: model definitions, and the bundled model files under data/."""
