"""Training techniques, one file each, wired together by :class:`fmnist_pl.module.FashionClassifier`."""
