"""Decode image files and uploads safely into RGB pictures; make thumbnails.

Everything that can go wrong with a file ends as one ImageError, whose `kind` says why
(too large, not an image we accept, cannot be decoded) and whose message names the file.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .metadata import PhotoMetadata, read_metadata

# HEIC/HEIF, the default of iPhone cameras, through libheif (AVIF is Pillow's own). libheif applies the
# file's rotation itself and resets the EXIF orientation, so exif_transpose below does not turn it twice.
pillow_heif.register_heif_opener()

# Formats we decode, as Pillow names them (MPO is the multi-picture JPEG some cameras write).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF", "HEIF", "AVIF"})
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC or AVIF"   # for people
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".mpo", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff",
                              ".heic", ".heif", ".avif"})
CONTENT_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                 "BMP": "image/bmp", "WEBP": "image/webp", "TIFF": "image/tiff", "HEIF": "image/heic",
                 "AVIF": "image/avif"}

# The pixel count in Pillow's DecompressionBombError, "Image size (N pixels) exceeds limit of ...".
_PILLOW_BOMB_COUNT = re.compile(r"\((\d+) pixels\)")
_WHITE = (255, 255, 255)


class ImageError(ValueError):
    """A file or upload that we will not index. kind: 'too_large' | 'unsupported' | 'corrupt'."""

    def __init__(self, source: str, reason: str, kind: str):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason, self.kind = source, reason, kind


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000


def hold_pillow_to(limits: Limits) -> None:
    """Make Pillow's bomb check fail above our pixel limit (it fails above twice MAX_IMAGE_PIXELS). Every
    open here calls this first: Pillow checks sizes its plugins learn while opening a file too (a GIF
    frame larger than its screen grows the picture before open returns), which ours, after open, cannot.
    A process opens files under its Settings' Limits, so threads write the same value here (should two
    differ at once, Pillow's ceiling is one of the two; decode still checks each call's own limit)."""
    Image.MAX_IMAGE_PIXELS = (limits.max_pixels + 1) // 2


@dataclass
class Decoded:
    image: Image.Image      # RGB, upright (EXIF orientation applied); may be draft-reduced
    width: int              # full size, upright
    height: int
    format: str             # Pillow's format name, e.g. "JPEG"
    metadata: PhotoMetadata = PhotoMetadata()   # read from the same opened file

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def content_type(path: Path, limits: Limits) -> str:
    """The media type of an image file, from its header; application/octet-stream when it is not one."""
    hold_pillow_to(limits)   # opening a GIF can draw its first frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Pillow's bomb warning, below its error: our limit decides
            with Image.open(path) as img:     # reads the header only
                return CONTENT_TYPES.get(img.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 -- a file that changed since indexing: still serve its bytes
        return "application/octet-stream"


def read_file(path: Path, limits: Limits) -> bytes:
    """Read a file, refusing it before reading when it is over the byte limit."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(str(path), f"file is {size:,} bytes, over the limit of {limits.max_bytes:,}",
                             "too_large")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read file ({exc.strerror or exc})", "corrupt") from None


def decode(data: bytes, limits: Limits, source: str = "upload", draft_size: int | None = None) -> Decoded:
    """Decode bytes into an upright RGB picture.

    draft_size: when the caller only needs a picture about this many pixels on its longer side,
    JPEGs are decoded at a reduced scale (much faster for large photos).
    """
    if len(data) > limits.max_bytes:
        raise ImageError(source, f"{len(data):,} bytes is over the limit of {limits.max_bytes:,}", "too_large")
    if not data:
        raise ImageError(source, "the file is empty", "unsupported")
    with one_picture(source, limits), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF or palette data; we decide below
        hold_pillow_to(limits)
        return _decode(data, limits, source, draft_size)


@contextlib.contextmanager
def one_picture(source: str, limits: Limits | None = None) -> Iterator[None]:
    """The boundary around one picture: any exception raised in the block (reading, decoding, preparing
    it) becomes that picture's ImageError, so one bad file never fails a request or a run. limits: those
    the block decodes under, to word Pillow's refusal of a decompression bomb as ours."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        if limits is None:
            raise ImageError(source, str(exc), "too_large") from None
        count = _PILLOW_BOMB_COUNT.search(str(exc))
        size = f"{int(count.group(1)):,} pixels" if count else "the image"
        raise ImageError(source, f"{size} is over the limit of {limits.max_pixels:,}", "too_large") from None
    except Exception as exc:  # noqa: BLE001 -- Pillow's decoders raise many types on odd data
        raise ImageError(source, f"cannot decode image ({_one_line(exc)})", "corrupt") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__   # one line: libheif's end in a newline


def _decode(data: bytes, limits: Limits, source: str, draft_size: int | None) -> Decoded:
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, NotImplementedError) as exc:   # no plugin could read the header
        raise _unopened(data, source, exc) from None
    fmt = img.format or ""
    if fmt not in ACCEPTED_FORMATS:
        raise _not_accepted(source, fmt)
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(source, f"image has no pixels ({width}x{height})", "corrupt")
    if width * height > limits.max_pixels:
        raise ImageError(source, f"{width}x{height} pixels is over the limit of {limits.max_pixels:,}",
                         "too_large")
    orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if draft_size and fmt in ("JPEG", "MPO"):
        img.draft("RGB", (draft_size, draft_size))  # keeps the picture at least draft_size on each side
    img.seek(0)  # first frame of animations
    try:
        img.load()
    except NotImplementedError as exc:   # a variant of the format that Pillow does not decode
        raise _cannot_decode_kind(source, fmt, exc) from None
    metadata = read_metadata(img)   # before load(): some plugins let go of their header data once decoded
    return Decoded(to_rgb(ImageOps.exif_transpose(img)), width, height, fmt, metadata)


def peek_metadata(data: bytes, limits: Limits, source: str) -> PhotoMetadata:
    """The metadata of an image file without decoding its pixels (for documents indexed before metadata
    was read: their vectors are kept). Raises ImageError for bytes that are not an image."""
    with one_picture(source, limits), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hold_pillow_to(limits)
        with Image.open(io.BytesIO(data)) as img:
            return read_metadata(img)


def _unopened(data: bytes, source: str, exc: Exception) -> ImageError:
    """Why no decoder opened the bytes, in plain words: not an image; an image format we do not accept;
    or a kind of an accepted format (a 12-bit JPEG, say) that the decoder does not implement."""
    fmt = _recognised_format(data[:16])
    if fmt is None:
        return ImageError(source, f"not an image (or not a format we accept: {FORMAT_NAMES})", "unsupported")
    if fmt not in ACCEPTED_FORMATS:
        return _not_accepted(source, fmt)
    if isinstance(exc, UnidentifiedImageError):   # Pillow hides the plugin's reason: ask it again
        factory = Image.OPEN[fmt][0]
        try:
            factory(io.BytesIO(data), "").close()   # as Image.open calls it for a file object
        except Exception as plugin_exc:  # noqa: BLE001 -- the reason is all we want from it
            exc = plugin_exc
    # Pillow turns a header that runs out of bytes into SyntaxError too; its cause tells them apart.
    if not isinstance(exc.__cause__ or exc, (SyntaxError, NotImplementedError)):
        return ImageError(source, f"cannot decode image ({_one_line(exc)})", "corrupt")
    return _cannot_decode_kind(source, fmt, exc)


def _recognised_format(prefix: bytes) -> str | None:
    """The first format whose signature the bytes start with (Pillow's own checks, in its order)."""
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept and accept(prefix) is True:
                return fmt
        except Exception:  # noqa: BLE001 -- a plugin's check that fails on odd bytes is a no
            continue
    return None


def _not_accepted(source: str, fmt: str) -> ImageError:
    return ImageError(source, f"{fmt or 'unknown'} images are not accepted (use {FORMAT_NAMES})", "unsupported")


def _cannot_decode_kind(source: str, fmt: str, exc: BaseException) -> ImageError:
    name = "JPEG" if fmt == "MPO" else fmt
    return ImageError(source, f"a {name} image of a kind we cannot decode ({_one_line(exc)})", "unsupported")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit scaled down, alpha flattened on white, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: Pillow's own convert would clip everything above 255 to white.
        arr = np.asarray(img, dtype=np.uint32) >> 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = float(arr.max()) or 1.0
        img = Image.fromarray(np.clip(arr * (255.0 / top if top > 255 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def thumbnail_jpeg(picture: Image.Image, size: int, quality: int = 85) -> bytes:
    """A JPEG no larger than size x size, aspect kept."""
    thumb = picture.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
