"""Safeguards for what arrives from disk: checkpoints and image files read within bounds, MNIST's files fetched and checked."""
