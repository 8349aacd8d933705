"""Hyperparameter sweeps over the CLI's options with Optuna (``python -m fmnist_pl sweep``)."""
