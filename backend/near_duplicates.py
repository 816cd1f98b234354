"""Is this the same picture? A small grey copy of each picture, and a geometric check of two of them.

The search descriptor (VGG16, pooled over the whole picture) finds a picture's edited copies among its
nearest neighbours, but its cosine alone cannot tell an edited copy from another photo of the same scene:
a border, a grey version or a thumbnail of a picture can score lower than another shot of the same object
(benchmarks.md, "Near duplicates"). So the descriptor only proposes candidates, and this check decides:

- `signature(picture)`: the picture in grey (colour edits drop out), its uniform borders trimmed (padding
  drops out), boxed down to SIDE x SIDE (size, compression and thumbnails drop out): SIDE² bytes.
- `similarities(new, others)` (and `similarity(a, b)` for one pair): is each other picture the same frame,
  moved by one transform? First their 8 x 8 thumbnails must agree roughly (most candidates stop here).
  Then blocks of the other are found in the new one at COARSE pixels and one similarity transform is fitted
  to them (RANSAC: a crop, a small rotation or a watermark leaves the other blocks to agree); each picture
  is warped onto the other and the two compared by normalised correlation (brightness and contrast drop
  out). Then each block is found again at SIDE pixels to a tenth of a pixel: in an edited copy they all sit
  where the one transform puts them; another shot of the scene (a burst, another view of an object) moves
  near and far things differently (parallax), so many blocks miss it by most of a pixel even when the
  whole frame correlates well. The score is the correlation times the share of blocks that agree, in
  [0, 1], the better of the two sides; 0 for frames that correlate less than CORRELATION_FLOOR once aligned.
"""
from __future__ import annotations

import functools
from typing import TypeGuard

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from PIL import Image, ImageOps

SIDE = 128                  # the signature's side (bytes: SIDE²); the fine check's resolution
COARSE = 64                 # the resolution the transform is searched at (SIDE / 2)
BLOCK = 16                  # the side of a compared block, at either resolution
SEARCH = 10                 # how far (coarse pixels) a block may have moved: 15 % of the frame
REFINE = 3                  # how far (fine pixels) a block may sit from where the coarse transform puts it
AGREE = 0.75                # fine pixels within which a block agrees with the fitted transform
EDGE = 6                    # coarse pixels along each side left out of the correlation: where a rotated copy's
                            # filled corners lie
MIN_OVERLAP = 0.5           # share of the frame the two pictures must share once aligned
TINY = 8                    # the side of the thumbnail compared first
TINY_FLOOR = 0.45           # its correlation under which a pair is not checked further (edited copies: 0.48 and
                            # up for 99.5 % of them; it rules out about 80 % of the candidates)
CORRELATION_FLOOR = 0.92    # aligned frames that correlate less are not one picture (edited copies: 0.93 and
                            # up for 99 % of them, docs/benchmarks.md); the fine check is not run for them
ONE_WAY_BELOW = 0.8         # frames aligned one way that correlate less than this are not checked the other way:
                            # both ways compare the same overlap (of 7,249 such pairs of a duplicate set, none
                            # reached CORRELATION_FLOOR the other way)
_COARSE_CENTRES = np.arange(10, COARSE - 9, 11)            # 5 x 5 blocks, centres 10 to 54
_FINE_CENTRES = np.arange(BLOCK, SIDE - BLOCK + 1, BLOCK)  # 7 x 7 blocks, centres 16 to 112
_MIN_CONTRAST = 20.0        # a block flatter than this (norm of its zero-mean grey levels) cannot be placed
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


def is_current(sig: bytes | None) -> TypeGuard[bytes]:
    """Whether a stored signature is of this version (older ones were smaller): others are computed again."""
    return sig is not None and len(sig) == SIDE * SIDE


class _Picture:
    """A signature ready to compare: its pixels at both resolutions, its blocks as unit templates, and a tiny
    thumbnail that rules out most candidates at once."""

    def __init__(self, sig: bytes):
        self.pixels = np.frombuffer(sig, dtype=np.uint8).reshape(SIDE, SIDE)
        step = SIDE // TINY
        self.tiny, _ = _unit(self.pixels.reshape(TINY, step, TINY, step).sum(axis=(1, 3), dtype=np.float32).ravel())

    # made when first needed: most candidates stop at the thumbnail, most of the rest at the correlation
    @functools.cached_property
    def fine(self) -> np.ndarray:
        return self.pixels.astype(np.float32)

    @functools.cached_property
    def coarse(self) -> np.ndarray:
        quads = self.fine.reshape(COARSE, 2, COARSE, 2)      # each coarse pixel the mean of its 2 x 2
        return (quads[:, 0, :, 0] + quads[:, 0, :, 1] + quads[:, 1, :, 0] + quads[:, 1, :, 1]) * 0.25

    @functools.cached_property
    def coarse_image(self) -> Image.Image:
        return Image.fromarray(self.coarse)

    @functools.cached_property
    def coarse_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        return _blocks(self.coarse, _COARSE_CENTRES)

    @functools.cached_property
    def fine_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        return _blocks(self.fine, _FINE_CENTRES)


def _unit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row (or the array) around its mean, of unit length; and its length before (its contrast)."""
    centred = values - values.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return centred / (norm + 1e-3), norm[..., 0]


def _blocks(picture: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The BLOCK x BLOCK blocks around a grid of centres, row by row, as unit templates; and their contrasts."""
    half = BLOCK // 2
    blocks = np.stack([picture[cy - half:cy + half, cx - half:cx + half].ravel() for cy in centres for cx in centres])
    return _unit(blocks)


def _window_sums(stack: np.ndarray) -> np.ndarray:
    """The sum of every BLOCK x BLOCK window of each picture of a stack (n, h, w), from its running sums."""
    running = np.zeros((stack.shape[0], stack.shape[1] + 1, stack.shape[2] + 1))
    running[:, 1:, 1:] = stack.cumsum(axis=1).cumsum(axis=2)
    return (running[:, BLOCK:, BLOCK:] - running[:, :-BLOCK, BLOCK:] - running[:, BLOCK:, :-BLOCK]
            + running[:, :-BLOCK, :-BLOCK])


def _window_norms(stack: np.ndarray) -> np.ndarray:
    """The norm around its mean of every BLOCK x BLOCK window of each picture of a stack (n, h, w)."""
    sums, squares = _window_sums(stack), _window_sums(stack ** 2)
    return np.sqrt(np.maximum(squares - sums ** 2 / BLOCK ** 2, 0.0)) + 1e-3


class _Searched:
    """The picture the others' blocks are looked for in: every BLOCK x BLOCK window of its coarse pixels (edges
    repeated SEARCH pixels out), and each window's norm around its mean. Made once per new picture."""

    def __init__(self, picture: _Picture):
        padded = np.pad(picture.coarse, SEARCH, mode="edge")
        self.windows = np.ascontiguousarray(sliding_window_view(padded, (BLOCK, BLOCK))).reshape(
            padded.shape[0] - BLOCK + 1, padded.shape[1] - BLOCK + 1, BLOCK * BLOCK)
        self.norms = _window_norms(padded[None])[0]


@functools.lru_cache(maxsize=1024)
def _prepared(sig: bytes) -> _Picture:
    """Kept for the signatures met last: a batch's candidates are often the same pictures."""
    return _Picture(sig)


def _on_grid(values: np.ndarray, first: int, step: int, count: int, span: int) -> np.ndarray:
    """A read-only view (count, count, span, span, ...) of `values` (h, w, ...): for each of a count x count grid
    of corners (first + step * i on both axes), the span x span entries from that corner."""
    rows, cols = values.strides[:2]
    return as_strided(values[first:, first:], (count, count, span, span) + values.shape[2:],
                      (step * rows, step * cols, rows, cols) + values.strides[2:], writeable=False)


def _coarse_matches(others: list[_Picture], b: _Searched) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each other picture a, (where, found): a's block centres and where each one's best match in b lies
    (coarse pixels), for the blocks with enough contrast whose best match correlates at 0.5 or more."""
    half, span, count = BLOCK // 2, 2 * SEARCH + 1, len(_COARSE_CENTRES)
    # window (y, x) of b starts at b's pixel (y - SEARCH, x - SEARCH): the windows of offsets -SEARCH..SEARCH
    # from each block's corner, for every block (a view: the grid of centres is regular), times the blocks of
    # all the other pictures at once (b's windows are read once, however many pictures look for theirs)
    first, step = int(_COARSE_CENTRES[0]) - half, int(_COARSE_CENTRES[1] - _COARSE_CENTRES[0])
    blocks = np.stack([a.coarse_blocks[0] for a in others], axis=-1).reshape(count, count, 1, BLOCK * BLOCK, -1)
    dots = np.matmul(_on_grid(b.windows, first, step, count, span), blocks)      # (count, count, span, span, n)
    scores = (dots / _on_grid(b.norms, first, step, count, span)[..., None]).reshape(count * count, span * span, -1)
    best = scores.argmax(axis=1)                                                   # (count², n)
    peaks = np.take_along_axis(scores, best[:, None, :], axis=1)[:, 0, :]
    matches = []
    for k, a in enumerate(others):
        use = (a.coarse_blocks[1] >= _MIN_CONTRAST) & (peaks[:, k] >= 0.5)
        dy, dx = np.divmod(best[use, k], span)
        cy, cx = np.divmod(np.flatnonzero(use), count)
        where = np.stack([_COARSE_CENTRES[cx], _COARSE_CENTRES[cy]], axis=1).astype(np.float64)
        matches.append((where, where + np.stack([dx, dy], axis=1) - SEARCH))
    return matches


@functools.lru_cache(maxsize=32)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of n matches, as two index arrays."""
    return np.triu_indices(n, 1)


def _fit_transform(where: np.ndarray, found: np.ndarray) -> np.ndarray | None:
    """The 3 x 2 affine map (x, y, 1) @ M of a's coarse pixels to b's: RANSAC over every pair of matches for
    one similarity transform (1.5 pixels' tolerance), then least squares over the matches that agree."""
    if len(where) < 3:
        return None
    za, zb = where[:, 0] + 1j * where[:, 1], found[:, 0] + 1j * found[:, 1]
    i, j = _pairs(len(za))
    scale = (zb[j] - zb[i]) / (za[j] - za[i])         # rotation and scale, as one complex number (centres differ)
    shift = zb[i] - scale * za[i]
    agree = np.abs(scale[:, None] * za[None, :] + shift[:, None] - zb[None, :]) < 1.5
    inliers = agree[int(np.argmax(agree.sum(axis=1)))]
    if inliers.sum() < 3:
        return None
    ones = np.ones((int(inliers.sum()), 1))
    transform, *_ = np.linalg.lstsq(np.hstack([where[inliers], ones]), found[inliers], rcond=None)
    return transform


def _inverse(transform: np.ndarray) -> np.ndarray | None:
    """The 3 x 2 affine map back, or None for one that folds the plane."""
    full = np.hstack([transform, [[0.0], [0.0], [1.0]]])
    if abs(np.linalg.det(full)) < 1e-6:
        return None
    return np.linalg.inv(full)[:, :2]


@functools.lru_cache(maxsize=4)
def _grid(n: int) -> np.ndarray:
    """(n², 3): every pixel (x, y, 1) of an n x n picture, row by row."""
    ys, xs = np.mgrid[0:n, 0:n]
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(n * n)], axis=1)
    grid.flags.writeable = False
    return grid


def _warp(picture: Image.Image, transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """picture (a square float image) sampled (bilinear) where `transform` sends each pixel of a same-sized
    grid, and where that lies inside both frames, EDGE pixels in from their sides."""
    n = picture.width
    grid = _grid(n)
    points = grid @ transform
    x, y = points[:, 0], points[:, 1]
    low, high = EDGE, n - 1 - EDGE
    inside = (x >= low) & (x <= high) & (y >= low) & (y <= high) & \
        (grid[:, 0] >= low) & (grid[:, 0] <= high) & (grid[:, 1] >= low) & (grid[:, 1] <= high)
    # Pillow's affine map takes pixel centres at +0.5 and samples half a pixel back: the constant terms
    # make up for it, so output pixel (x, y) is the input sampled at (x, y, 1) @ transform
    (a, d), (b, e), (c, f) = transform
    warped = picture.transform(
        (n, n), Image.Transform.AFFINE, (a, b, c + 0.5 * (1 - a - b), d, e, f + 0.5 * (1 - d - e)),
        Image.Resampling.BILINEAR)
    return np.asarray(warped), inside.reshape(n, n)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6))


def _agreement(a: _Picture, b: _Picture, coarse: np.ndarray) -> float:
    """The share of a's fine blocks that b holds within AGREE pixels of one affine transform, each found to
    a tenth of a pixel near where the coarse transform puts it; 0 when too few can be found. (Measured on b
    as it is: warping it first would blur it, and other shots of a scene would agree more.)"""
    half, span, size = BLOCK // 2, 2 * REFINE + 1, BLOCK + 2 * REFINE
    centres = np.stack(np.meshgrid(_FINE_CENTRES, _FINE_CENTRES), axis=-1).reshape(-1, 2).astype(np.float64)
    # where the coarse transform puts each block (a fine pixel x is coarse pixel x / 2 - 0.25)
    predicted = 2 * (np.hstack([centres / 2 - 0.25, np.ones((len(centres), 1))]) @ coarse) + 0.5
    tops = np.rint(predicted[:, 1]).astype(np.int64) - half - REFINE
    lefts = np.rint(predicted[:, 0]).astype(np.int64) - half - REFINE
    # blocks with contrast that b holds (not cropped away)
    blocks, contrast = a.fine_blocks
    use = (contrast >= 2 * _MIN_CONTRAST) & (tops >= 0) & (lefts >= 0) & (tops + size <= SIDE) & \
        (lefts + size <= SIDE)
    if use.sum() < 6:
        return 0.0
    rows = tops[use, None, None] + np.arange(size)[None, :, None]
    cols = lefts[use, None, None] + np.arange(size)[None, None, :]
    regions = b.fine[rows, cols]                                        # (blocks, size, size)
    # every window of each region, one row each (a copy: a matrix product is far faster than a strided sum)
    windows = sliding_window_view(regions, (BLOCK, BLOCK), axis=(1, 2)).reshape(len(regions), span * span, -1)
    templates = blocks[use]
    dots = np.matmul(windows, templates[:, :, None]).reshape(-1, span, span)   # templates sum to 0: no mean
    scores = dots / _window_norms(regions)
    best = scores.reshape(len(scores), -1).argmax(axis=1)
    dy, dx = best // span, best % span
    n = np.arange(len(scores))
    located = (scores[n, dy, dx] >= 0.7) & (dy > 0) & (dy < span - 1) & (dx > 0) & (dx < span - 1)
    if located.sum() < 6:
        return 0.0
    n, dy, dx = n[located], dy[located], dx[located]
    peak = scores[n, dy, dx]

    def offset(below: np.ndarray, above: np.ndarray) -> np.ndarray:
        """The sub-pixel offset of each peak from its neighbours along one axis (a parabola's top)."""
        curve = below - 2 * peak + above
        return np.where(curve < 0, 0.5 * (below - above) / np.where(curve < 0, curve, -1.0), 0.0)

    found = np.stack([lefts[use][n] + half + dx + offset(scores[n, dy, dx - 1], scores[n, dy, dx + 1]),
                      tops[use][n] + half + dy + offset(scores[n, dy - 1, dx], scores[n, dy + 1, dx])], axis=1)
    design = np.hstack([centres[use][n], np.ones((len(n), 1))])
    transform, *_ = np.linalg.lstsq(design, found, rcond=None)
    misses = np.linalg.norm(design @ transform - found, axis=1)
    if (misses < 1.5).sum() >= 6:                     # refit without the blocks a watermark or a crop moved
        keep = misses < 1.5
        transform, *_ = np.linalg.lstsq(design[keep], found[keep], rcond=None)
        misses = np.linalg.norm(design @ transform - found, axis=1)
    return float(np.mean(misses < AGREE))


def _aligned(a: _Picture, b: _Picture, transform: np.ndarray) -> float | None:
    """The correlation of a's frame with b's warped onto it (the transform of a's pixels into b's), over what
    both hold; None when they share less than MIN_OVERLAP of the frame."""
    warped, inside = _warp(b.coarse_image, transform)
    if inside.mean() < MIN_OVERLAP:
        return None
    return _correlation(a.coarse[inside], warped[inside])


def _checked(a: _Picture, b: _Picture, transform: np.ndarray, correlation: float | None) -> float:
    """How surely b is a moved and edited copy of a's frame, given the transform of a's pixels into b's and
    the correlation of the two frames once aligned by it."""
    if correlation is None or correlation < CORRELATION_FLOOR:
        return 0.0
    return correlation * _agreement(a, b, transform)


def similarities(sig: bytes, others: list[bytes]) -> list[float]:
    """How surely each of `others` is one picture with `sig`, in [0, 1]. The blocks of each other picture are
    looked for in this one (its windows made once), and the transform found is checked both ways: the side
    that was cropped less holds all of the other's blocks."""
    new = _prepared(sig)
    olds = [_prepared(other) for other in others]
    # the frames' coarse layouts must agree roughly: most candidates stop here
    checked = [k for k, old in enumerate(olds) if float(new.tiny @ old.tiny) >= TINY_FLOOR]
    scores = [0.0] * len(others)
    if not checked:
        return scores
    matches = _coarse_matches([olds[k] for k in checked], _Searched(new))
    for k, (where, found) in zip(checked, matches):
        old = olds[k]
        forward = _fit_transform(where, found)                  # old's pixels into new's
        backward = None if forward is None else _inverse(forward)
        if forward is None or backward is None:
            continue
        correlation = _aligned(old, new, forward)
        score = _checked(old, new, forward, correlation)
        if correlation is None or correlation >= ONE_WAY_BELOW:     # else the other way cannot pass either
            score = max(score, _checked(new, old, backward, _aligned(new, old, backward)))
        scores[k] = min(1.0, score)
    return scores


def similarity(a: bytes, b: bytes) -> float:
    """How surely two signatures are of one picture, in [0, 1] (`similarities` of one pair)."""
    return similarities(a, [b])[0]
