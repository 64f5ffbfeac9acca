"""Painting by gradient descent on the pixels (Gatys et al.): losses, the objective's terms,
tiling, the memory planner, the scale schedule, regions, colour, the one loop (loop.py), the
engine that runs it (engine.py), texture synthesis and the explain report."""
