"""``python -m fmnist_pl.data [DATA_DIR]``: get and verify the FashionMNIST files, then say where they are.

The same search as training does (``DATA_DIR``, ``$FMNIST_DATA``, Debian's folder, then torchvision's
download), without training anything.
"""

import sys

from fmnist_pl.data import sets
from fmnist_pl.data.files import ensure_files
from fmnist_pl.errors import UserError


def main(argv: list[str]) -> int:
    data_dir = argv[0] if argv else "data"
    try:
        folder = ensure_files(data_dir, sets.load(sets.DEFAULT))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"FashionMNIST verified in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
