"""Your own digits: image files opened safely, made MNIST-like, classified, flagged when unlike a digit, and drawn on a pad."""
