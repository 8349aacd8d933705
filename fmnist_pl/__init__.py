"""fmnist_pl: a PyTorch Lightning project around a fully connected FashionMNIST classifier."""

__version__ = "0.1.0"
