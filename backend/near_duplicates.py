"""Is this the same picture? A small signature of each picture's layout, and the similarity of two of them.

The search descriptor (VGG16, pooled over the whole picture) finds a picture's edited copies among its
nearest neighbours, but its cosine alone cannot tell an edited copy from another photo of the same scene:
a border, a grey version or a thumbnail of a picture can score lower than another shot of the same object
(benchmarks.md, "Duplicates"). So the descriptor only proposes candidates, and this second signal decides:

- `signature(picture)`: the picture in grey (colour edits drop out), its uniform borders trimmed (padding
  drops out), boxed down to SIDE x SIDE (size, compression and thumbnails drop out): SIDE² bytes.
- `similarity(a, b)`: the normalised correlation of the two layouts (brightness and contrast drop out),
  the best over small shifts of the centre window (crops of a few percent and small rotations move the
  content a little), in [-1, 1]. Another view of an object, or another photo of a scene, moves things by
  much more than that, and scores low.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageOps

SIDE = 40                   # the signature's side (bytes: SIDE²)
WINDOW = 32                 # the compared centre window's side
SHIFT = 2                   # how far (in signature pixels) the window may move, each way
_MARGIN = (SIDE - WINDOW) // 2
_BORDER_TOLERANCE = 12      # grey levels a border line may differ from the border colour
_BORDER_SHARE = 0.97        # share of a line within the tolerance for it to count as border


def _trim(grey: np.ndarray) -> np.ndarray:
    """The picture without uniform borders (a frame or padding of one colour), never below 8 pixels."""
    h, w = grey.shape
    ref = np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))

    def border(line: np.ndarray) -> bool:
        return float(np.mean(np.abs(line - ref) <= _BORDER_TOLERANCE)) >= _BORDER_SHARE

    top, bottom, left, right = 0, h, 0, w
    while top < bottom - 8 and border(grey[top, left:right]):
        top += 1
    while bottom > top + 8 and border(grey[bottom - 1, left:right]):
        bottom -= 1
    while left < right - 8 and border(grey[top:bottom, left]):
        left += 1
    while right > left + 8 and border(grey[top:bottom, right - 1]):
        right -= 1
    return grey[top:bottom, left:right]


def signature(picture: Image.Image) -> bytes:
    """SIDE² bytes: the grey, border-trimmed picture boxed down to SIDE x SIDE."""
    grey = ImageOps.grayscale(picture if picture.mode in ("RGB", "L") else picture.convert("RGB"))
    grey.thumbnail((256, 256), Image.Resampling.BOX)
    trimmed = _trim(np.asarray(grey, dtype=np.int16))
    small = Image.fromarray(trimmed.astype(np.uint8)).resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).tobytes()


@functools.lru_cache(maxsize=4096)
def _windows(sig: bytes) -> np.ndarray:
    """(shifts, WINDOW²): every shifted window, centred and unit length. Kept for the signatures met last:
    a new picture is compared with 20 candidates, and a batch's candidates are often the same."""
    grid = np.frombuffer(sig, dtype=np.uint8).reshape(SIDE, SIDE).astype(np.float32)
    span = WINDOW + 2 * SHIFT
    views = np.lib.stride_tricks.sliding_window_view(grid[_MARGIN - SHIFT:_MARGIN - SHIFT + span,
                                                          _MARGIN - SHIFT:_MARGIN - SHIFT + span], (WINDOW, WINDOW))
    out = views.reshape(-1, WINDOW * WINDOW).copy()
    out -= out.mean(axis=1, keepdims=True)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
    out.flags.writeable = False
    return out


def similarity(a: bytes, b: bytes) -> float:
    """How alike two signatures are, in [-1, 1]: the best correlation of either one's centre window with
    the other's shifted windows."""
    wa, wb = _windows(a), _windows(b)
    centre = (2 * SHIFT + 1) ** 2 // 2
    return min(1.0, float(max((wa @ wb[centre]).max(), (wb @ wa[centre]).max())))
