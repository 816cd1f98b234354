"""python -m indexer.sample DIR: the sample photos (backend/sample_photos.py) for a first run, in tagged folders."""
from __future__ import annotations

import sys
from pathlib import Path

from backend.sample_photos import fetch

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m indexer.sample DIR")
    count = fetch(Path(sys.argv[1]))
    print(f"{count} sample photos in {sys.argv[1]}")
