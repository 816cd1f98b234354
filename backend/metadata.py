"""What a picture says of itself: when it was taken, by which camera, and its file type.

Read from the file Pillow has already opened to decode it (imaging.decode), so no second read of the file.
EXIF is untrusted input: every value is checked for its type, length and sense, and anything wrong (a
truncated or huge block, a number where text belongs, the date "0000:00:00 00:00:00") leaves that field
empty. Reading metadata never fails a picture.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

# EXIF tags (CIPA DC-008): in IFD0 ...
_MAKE, _MODEL, _EXIF_IFD = 0x010F, 0x0110, 0x8769
# ... and in the Exif IFD.
_DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
MAX_TEXT = 64                     # longer make or model strings are not a camera's
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
FIRST_YEAR, LAST_YEAR = 1826, 2999   # the first photograph; later is a broken clock, not a date
FILE_TYPES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp",
              "TIFF": "tiff", "HEIF": "heic", "AVIF": "avif"}


@dataclass(frozen=True)
class PhotoMetadata:
    taken: str | None = None          # "YYYY-MM-DDTHH:MM:SS", with "+HH:MM" when the camera wrote its offset
    camera_make: str | None = None
    camera_model: str | None = None
    file_type: str | None = None


def read_metadata(img: Image.Image) -> PhotoMetadata:
    """The metadata of an opened picture (its pixels need not be loaded); empty fields for what is missing
    or not believable. Never raises for the picture's sake."""
    file_type = FILE_TYPES.get(img.format or "")
    try:
        exif = img.getexif()
        make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
        details = exif.get_ifd(_EXIF_IFD)
        taken = _taken(details.get(_DATE_TIME_ORIGINAL), details.get(_OFFSET_TIME_ORIGINAL))
    except Exception:  # noqa: BLE001 -- Pillow's EXIF parser raises many types on hostile data: no metadata
        return PhotoMetadata(file_type=file_type)
    return PhotoMetadata(taken, make, model, file_type)


def _text(value) -> str | None:
    """An EXIF ASCII value as text: NULs and surrounding space dropped, printable, not too long."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    value = " ".join(value.split("\x00", 1)[0].split())
    if not value or len(value) > MAX_TEXT or not value.isprintable():
        return None
    return value


def _taken(value, offset) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (and OffsetTimeOriginal "+HH:MM") as ISO 8601 local time."""
    text = _text(value)
    match = _EXIF_DATE.fullmatch(text) if text else None
    if not match:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        when = datetime(year, month, day, hour, minute, second)
    except ValueError:   # month 13, 0000:00:00, February 30th
        return None
    if not FIRST_YEAR <= when.year <= LAST_YEAR:
        return None
    iso = when.isoformat()
    zone = _OFFSET.fullmatch(_text(offset) or "")
    if zone and int(zone.group(2)) <= 14 and int(zone.group(3)) < 60:
        iso += zone.group(0)
    return iso
