"""``python -m fmnist_pl``: the command line."""

from fmnist_pl.cli import main

if __name__ == "__main__":
    main()
