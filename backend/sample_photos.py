"""A small set of real photos, sorted into tagged folders: `make run`'s first index (python -m indexer.sample
DIR) and the int8 model's calibration set.

The photos are the public-domain and freely licensed ones that scikit-image bundles in its wheel; only
the wheel is downloaded (from the package index pip is set up to use), nothing is installed.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "scikit-image==0.26.0"
# folder (becomes a tag with --tags-from-folders) -> files in skimage/data/
PHOTOS = {
    "animals": ["chelsea.png"],
    "food": ["coffee.png"],
    "people": ["astronaut.png", "camera.png"],
    "space": ["hubble_deep_field.jpg", "moon.png", "rocket.jpg"],
    "vehicles": ["motorcycle_left.png", "motorcycle_right.png"],
    "textures": ["brick.png", "grass.png", "gravel.png"],
    "science": ["ihc.png", "retina.jpg", "cell.png"],
    "objects": ["coins.png"],
}


def fetch(target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        written = 0
        with zipfile.ZipFile(wheel) as archive:
            for folder, names in PHOTOS.items():
                (target / folder).mkdir(exist_ok=True)
                for name in names:
                    (target / folder / name).write_bytes(archive.read(f"skimage/data/{name}"))
                    written += 1
    return written

