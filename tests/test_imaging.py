"""Safe decoding: every odd or bad file is generated here, then decoded for real."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.imaging import (ImageError, Limits, content_type, decode, is_image_path, one_picture, read_file,
                             thumbnail_jpeg, to_rgb)
from benchmarks.odd_files import odd_files

from .conftest import picture

LIMITS = Limits(max_bytes=5_000_000, max_pixels=4_000_000)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "HEIF", "AVIF"])
def test_accepted_formats_decode_to_rgb(fmt):
    original = picture(1, (40, 30))
    decoded = decode(encode(original, fmt), LIMITS, "x")
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.format == fmt
    # the pixels, not just the shape: lossy formats stay close to the original
    error = np.abs(np.asarray(decoded.image, dtype=np.int16) - np.asarray(original, dtype=np.int16)).mean()
    assert error < 40, error


def test_heic_alpha_and_damage():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert np.asarray(decode(encode(rgba, "HEIF"), LIMITS, "x").image).min() > 200   # flattened on white
    data = encode(picture(3, (64, 48)), "HEIF")
    with pytest.raises(ImageError) as err:
        decode(data[: len(data) // 2], LIMITS, "cut.heic")
    assert err.value.kind == "corrupt" and str(err.value).startswith("cut.heic: cannot decode image")
    assert "\n" not in str(err.value)                      # libheif's message ends in one


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF"])
def test_exif_orientation_is_applied(fmt):
    # A 40x20 picture, left half red, stored with orientation 6 ("rotate 90 clockwise to display").
    # An iPhone's HEIC carries it in the file too (libheif turns it and resets EXIF): upright once.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    decoded = decode(encode(img, fmt, exif=exif.tobytes(), quality=95), LIMITS, "x")
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (20, 40)
    top = np.asarray(decoded.image)[5, 10]
    bottom = np.asarray(decoded.image)[35, 10]
    assert top[0] > 200 and top[1] < 60       # red ended up on top after the rotation
    assert bottom[0] < 60


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode(encode(picture(2).convert("CMYK"), "JPEG"), LIMITS, "x")
    assert decoded.image.mode == "RGB"


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    arr = np.full((10, 10), 32768, dtype=np.uint16)  # mid grey in 16 bits
    decoded = decode(encode(Image.fromarray(arr), "PNG"), LIMITS, "x")
    value = np.asarray(decoded.image)[0, 0]
    assert decoded.image.mode == "RGB"
    assert 120 <= value[0] <= 136, value         # clipping would give 255


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_flattened_on_white(mode):
    img = Image.new(mode, (8, 8), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    decoded = decode(encode(img, "PNG"), LIMITS, "x")
    assert tuple(np.asarray(decoded.image)[0, 0]) == (255, 255, 255)


def test_palette_with_transparency():
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(img, "PNG", transparency=1)
    assert tuple(np.asarray(decode(data, LIMITS, "x").image)[0, 0]) == (255, 255, 255)
    opaque = encode(img, "PNG")
    assert tuple(np.asarray(decode(opaque, LIMITS, "x").image)[0, 0]) == (255, 0, 0)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 0, 250), (0, 250, 0)]]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = np.asarray(decode(out.getvalue(), LIMITS, "x").image)[8, 8]
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize("mode", ["1", "L", "I", "F", "I;16"])
def test_other_modes_become_rgb(mode):
    assert to_rgb(picture(3).convert("L").convert(mode) if mode != "I;16" else
                  Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16))).mode == "RGB"


def test_truncated_jpeg_is_corrupt_and_named():
    data = encode(picture(4, (200, 200)), "JPEG")
    with pytest.raises(ImageError) as err:
        decode(data[: len(data) // 2], LIMITS, "holiday/beach.jpg")
    assert err.value.kind == "corrupt"
    assert "holiday/beach.jpg" in str(err.value)


@pytest.mark.parametrize("data", [b"just some text, not an image", b"\x00" * 100, b"%PDF-1.4 fake"])
def test_non_images_are_unsupported(data):
    with pytest.raises(ImageError) as err:
        decode(data, LIMITS, "notes.txt")
    assert err.value.kind == "unsupported"
    assert "notes.txt" in str(err.value)


def test_empty_file():
    with pytest.raises(ImageError) as err:
        decode(b"", LIMITS, "empty.jpg")
    assert err.value.kind == "unsupported"


def test_format_we_do_not_accept():
    with pytest.raises(ImageError) as err:
        decode(encode(picture(5), "ICO"), LIMITS, "favicon.ico")
    assert err.value.kind == "unsupported"
    assert "ICO" in err.value.reason


def test_decompression_bomb_is_refused_before_decoding():
    # 20000 x 20000 of one colour compresses to a few hundred KB as PNG but would need 1.2 GB decoded.
    img = Image.new("L", (20000, 20000))
    data = encode(img, "PNG", optimize=False, compress_level=9)
    assert len(data) < LIMITS.max_bytes
    with pytest.raises(ImageError) as err:
        decode(data, LIMITS, "bomb.png")
    assert err.value.kind == "too_large"
    assert err.value.reason == "400,000,000 pixels is over the limit of 4,000,000"


def test_byte_limit(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff" * 2000)
    with pytest.raises(ImageError) as err:
        read_file(path, Limits(max_bytes=1000))
    assert err.value.kind == "too_large"
    with pytest.raises(ImageError) as err:
        decode(b"\xff" * 2000, Limits(max_bytes=1000), "upload")
    assert err.value.kind == "too_large"


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError) as err:
        read_file(tmp_path / "gone.jpg", LIMITS)
    assert "gone.jpg" in str(err.value)


def test_draft_mode_decodes_large_jpeg_smaller_but_reports_full_size():
    data = encode(picture(6, (2000, 1500)), "JPEG")
    decoded = decode(data, LIMITS, "x", draft_size=300)
    assert (decoded.width, decoded.height) == (2000, 1500)
    assert 300 <= min(decoded.image.size) < 1500


def test_unicode_file_name(tmp_path):
    path = tmp_path / "café 東京 🐴.jpg"
    picture(7).save(path)
    decoded = decode(read_file(path, LIMITS), LIMITS, str(path))
    assert decoded.image.size == (96, 64)


def test_thumbnail_fits_and_is_jpeg():
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(picture(8, (800, 400)), 128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 64)


# -- odd files (benchmarks/odd_files.py makes them; the fuzzer starts from the same ones) -----------------

EXPECTED_KIND = {"twelve-bit.jpg": "unsupported", "unknown-flags.dds": "unsupported",
                 "unknown-fourcc.dds": "unsupported", "unknown-dxgi.dds": "unsupported", "icon.ico": "unsupported",
                 "claims-huge.png": "too_large", "truncated.jpg": "corrupt", "header-only.jpg": "corrupt",
                 "flipped.jpg": "unsupported", "truncated.png": "corrupt", "empty.jpg": "unsupported",
                 "text.png": "unsupported"}


@pytest.mark.parametrize("name", sorted(odd_files()))
def test_every_odd_file_decodes_or_is_one_image_error(name):
    data = odd_files()[name]
    if name not in EXPECTED_KIND:
        decoded = decode(data, Limits(), name, draft_size=64)
        assert decoded.image.mode == "RGB" and decoded.image.size[0] > 0
        return
    with pytest.raises(ImageError) as err:
        decode(data, Limits(), name, draft_size=64)
    assert err.value.kind == EXPECTED_KIND[name]
    assert str(err.value).startswith(f"{name}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["unknown-flags.dds", "unknown-fourcc.dds", "unknown-dxgi.dds"])
def test_dds_the_decoder_does_not_implement_is_unsupported_not_a_crash(name):
    data = odd_files()[name]
    with pytest.raises(NotImplementedError):      # what Pillow itself does with these bytes
        Image.open(io.BytesIO(data)).load()
    with pytest.raises(ImageError) as err:
        decode(data, LIMITS, name)
    assert err.value.kind == "unsupported" and err.value.reason.startswith("DDS images are not accepted")


def test_twelve_bit_jpeg_is_named_as_a_jpeg_we_cannot_decode():
    with pytest.raises(ImageError) as err:
        decode(odd_files()["twelve-bit.jpg"], LIMITS, "scan.jpg")
    assert err.value.kind == "unsupported"
    assert err.value.reason == "a JPEG image of a kind we cannot decode (cannot handle 12-bit layers)"


def test_mpo_is_an_image_file_and_decodes_its_first_picture():
    assert is_image_path(Path("DSCF0001.MPO"))
    decoded = decode(odd_files()["stereo.mpo"], LIMITS, "x")
    assert decoded.format == "MPO" and (decoded.width, decoded.height) == (48, 32)


def test_one_picture_turns_any_exception_into_that_pictures_error():
    with pytest.raises(ImageError) as err:
        with one_picture("a.png"):
            raise NotImplementedError("no such thing")
    assert err.value.kind == "corrupt" and str(err.value) == "a.png: cannot decode image (no such thing)"
    with pytest.raises(KeyboardInterrupt):            # not a picture's fault: goes through
        with one_picture("a.png"):
            raise KeyboardInterrupt


def test_content_type_reads_a_header_under_the_configured_pixel_limit(tmp_path):
    # 64 Mpixels: over the default limit (Pillow's check refuses it), within a limit raised to 100 M
    path = tmp_path / "panorama.png"
    Image.new("L", (16000, 4000)).save(path)
    assert content_type(path, Limits(max_pixels=100_000_000)) == "image/png"
    assert content_type(path, Limits()) == "application/octet-stream"
    assert content_type(tmp_path / "gone.png", Limits()) == "application/octet-stream"
