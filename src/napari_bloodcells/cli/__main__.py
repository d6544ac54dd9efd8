"""``python -m napari_bloodcells.cli ...`` works like the ``napari-bloodcells`` command."""

import sys

from napari_bloodcells.cli import main

if __name__ == "__main__":
    sys.exit(main())
