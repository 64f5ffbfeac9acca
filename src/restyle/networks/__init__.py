"""Painting with a trained network: run it (feedforward.py), train it (training.py, the one
training loop; style_training.py and train_upscaler.py, its two recipes), enlarge with the
upscaler (upscale.py) and export to ONNX (export.py)."""
