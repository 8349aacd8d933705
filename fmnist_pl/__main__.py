"""``python -m fmnist_pl``: the command line."""

if __name__ == "__main__":
    # Imported here, not at the top: a process started by multiprocessing's "spawn" (LitServe's
    # inference workers) imports this module too, and needs none of the command line.
    from fmnist_pl.cli import main

    main()
