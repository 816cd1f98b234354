"""Odd image files, made here byte by byte: the tests decode them, and the fuzzer starts from them.

Each maker returns the bytes of one file; `odd_files()` gives all of them by a file name that says
what it is. Nothing here is read from disk or from anyone else's corpus.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

import backend.imaging  # noqa: F401 -- registers the HEIC plugin, for photo.heic


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def noise(seed: int, size=(48, 32), mode: str = "RGB") -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def jpeg_12bit() -> bytes:
    """A JPEG whose frame header says 12 bits per sample (extended sequential, SOF1): a real JPEG
    variant (medical and some camera files) that Pillow does not decode."""
    data = bytearray(encode(noise(1), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = 0xC1      # SOF1, extended sequential
    data[sof + 4] = 12        # sample precision
    return bytes(data)


def _dds(pixel_format: bytes, extra: bytes = b"") -> bytes:
    """A DirectDraw Surface of 4x4 with the given 32-byte pixel format block (and DX10 header)."""
    header = struct.pack("<3I", 0x1007, 4, 4) + struct.pack("<3I", 0, 0, 0) + b"\0" * 44
    header += pixel_format + b"\0" * (120 - len(header) - len(pixel_format))
    return b"DDS " + struct.pack("<I", 124) + header + extra + b"\0" * 64


def dds_unknown_flags() -> bytes:
    """DDS pixel-format flags that name no layout (8): Pillow raises NotImplementedError."""
    return _dds(struct.pack("<4I", 32, 8, 0, 0))


def dds_unknown_fourcc() -> bytes:
    """A four-character code that is no compression Pillow implements."""
    return _dds(struct.pack("<4I", 32, 4, 0, 0))


def dds_unknown_dxgi() -> bytes:
    """A DX10 header naming DXGI format 93 (a typeless BC6/BC7 variant)."""
    return _dds(struct.pack("<II", 32, 4) + b"DX10" + struct.pack("<I", 0),
                struct.pack("<5I", 93, 3, 0, 1, 0))


def mpo(seed: int = 2) -> bytes:
    """A two-picture MPO, as stereo and multi-shot cameras write."""
    return encode(noise(seed), "MPO", save_all=True, append_images=[noise(seed + 1)])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 0, 250), (0, 250, 0)]]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def odd_files() -> dict[str, bytes]:
    """Name -> bytes: odd but valid pictures, variants we cannot decode, and damaged files."""
    jpeg = encode(noise(3, (64, 48)), "JPEG")
    png16 = encode(Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), "PNG")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    flipped = bytearray(jpeg)
    for i in range(200, len(flipped), 97):
        flipped[i] ^= 0x5A
    files = {
        "plain.jpg": jpeg,
        "cmyk.jpg": encode(noise(4).convert("CMYK"), "JPEG"),
        "progressive.jpg": encode(noise(5), "JPEG", progressive=True),
        "twelve-bit.jpg": jpeg_12bit(),
        "stereo.mpo": mpo(),
        "sixteen-bit.png": png16,
        "palette-transparent.png": encode(palette, "PNG", transparency=1),
        "la.png": encode(Image.new("LA", (8, 8), (0, 0)), "PNG"),
        "claims-huge.png": png_claiming(65_535, 65_535),
        "animated.gif": animated_gif(),
        "rgba.webp": encode(noise(6, mode="RGBA"), "WEBP"),
        "one-bit.tif": encode(noise(7, mode="1"), "TIFF", compression="group4"),
        "float.tif": encode(noise(8, mode="F"), "TIFF"),
        "rle.bmp": encode(noise(9, mode="P"), "BMP"),
        "photo.heic": encode(noise(10), "HEIF"),
        "photo.avif": encode(noise(11), "AVIF"),
        "unknown-flags.dds": dds_unknown_flags(),
        "unknown-fourcc.dds": dds_unknown_fourcc(),
        "unknown-dxgi.dds": dds_unknown_dxgi(),
        "icon.ico": encode(noise(12), "ICO"),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "header-only.jpg": jpeg[:5],
        "flipped.jpg": bytes(flipped),
        "truncated.png": encode(noise(13), "PNG")[:60],
        "empty.jpg": b"",
        "text.png": b"not an image at all",
    }
    return files
