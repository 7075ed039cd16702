"""mnist_cnn: a VGG-style convolutional network on MNIST, trained and studied from notebooks."""

__version__ = "0.1.0"
