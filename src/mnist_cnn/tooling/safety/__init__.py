"""Safeguards for what arrives from disk: checkpoints read within bounds, MNIST's files fetched and checked."""
