"""FashionMNIST: its files, its classes and the LightningDataModule over them."""
