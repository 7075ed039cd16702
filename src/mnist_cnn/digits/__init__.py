"""Your own digits: image files opened safely, made MNIST-like, classified, flagged when unlike a digit, drawn on a pad, and pictured."""
