"""Metadata read at indexing: EXIF date taken, camera, file type, folder; hostile EXIF never fails a picture;
documents indexed before get theirs on the next run, keeping their vectors; old embedded files gain the
columns."""
from __future__ import annotations

import io
import random
import sqlite3
import struct

import numpy as np
import pytest
from PIL import Image

from backend.imaging import Limits, decode
from backend.ingest import Indexer
from backend.metadata import PhotoMetadata
from backend.stores.base import METADATA_VERSION, Document
from backend.stores.embedded import _SCHEMA, EmbeddedStore
from benchmarks.exif_photos import exif_bytes
from indexer.scan import scan

from .conftest import picture

LIMITS = Limits()


def jpeg(exif: bytes = b"", fmt: str = "JPEG", seed: int = 1) -> bytes:
    out = io.BytesIO()
    picture(seed, (40, 20)).save(out, fmt, exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("fmt, file_type", [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tiff")])
def test_date_taken_offset_camera_and_type_are_read_in_the_decode_pass(fmt, file_type):
    data = jpeg(exif_bytes("Canon", "Canon EOS 5D", "2021:06:05 14:03:22", "+02:00", orientation=6), fmt)
    decoded = decode(data, LIMITS, "x")
    assert decoded.metadata == PhotoMetadata("2021-06-05T14:03:22+02:00", "Canon", "Canon EOS 5D", file_type)
    if fmt == "JPEG":
        assert (decoded.width, decoded.height) == (20, 40)        # upright


def test_no_exif_and_no_offset():
    assert decode(jpeg(), LIMITS, "x").metadata == PhotoMetadata(file_type="jpeg")
    assert decode(jpeg(exif_bytes(taken="2019:01:02 03:04:05")), LIMITS, "x").metadata.taken == "2019-01-02T03:04:05"


@pytest.mark.parametrize("taken, offset, expected", [
    ("0000:00:00 00:00:00", None, None),               # what cameras write for "unknown"
    ("    :  :     :  :  ", None, None),
    ("2021:13:01 00:00:00", None, None),               # no 13th month
    ("2021:02:30 00:00:00", None, None),
    ("1700:01:01 00:00:00", None, None),               # before photography
    ("2021:06:05 14:03:22\x00garbage", None, "2021-06-05T14:03:22"),   # the NUL ends EXIF text
    ("2021:06:05 14:03:22", "+99:00", "2021-06-05T14:03:22"),          # an offset that is no offset
    ("2021:06:05 14:03:22", "Z", "2021-06-05T14:03:22"),
    ("2021-06-05 14:03:22", None, None),
])
def test_dates_that_are_not_dates_are_left_empty(taken, offset, expected):
    assert decode(jpeg(exif_bytes(taken=taken, offset=offset)), LIMITS, "x").metadata.taken == expected


def ifd0(*entries: tuple[int, int, int, bytes]) -> bytes:
    """A little-endian EXIF block of IFD0 entries (tag, TIFF type, count, 4 value bytes) as given."""
    body = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", tag, kind, count) + value
                                                     for tag, kind, count, value in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + body + b"\x00\x00\x00\x00"


def test_values_of_the_wrong_type_or_size_are_left_empty():
    block = ifd0((0x010F, 3, 1, struct.pack("<HH", 12345, 0)),        # make: a SHORT, not text
                 (0x0110, 5, 1, struct.pack("<I", 8)))                # model: a RATIONAL
    assert decode(jpeg(block), LIMITS, "x").metadata == PhotoMetadata(file_type="jpeg")
    exif = Image.Exif()
    exif[0x0110] = "M" * 5000                 # model: far too long for a camera's name
    assert decode(jpeg(exif.tobytes()), LIMITS, "x").metadata == PhotoMetadata(file_type="jpeg")


def test_truncated_and_random_exif_never_fails_a_picture():
    good = exif_bytes("Canon", "Canon EOS 5D", "2021:06:05 14:03:22", "+02:00")
    rng = random.Random(22)
    blocks = [good[:n] for n in range(8, len(good), 7)]                          # cut anywhere
    blocks += [bytes(b ^ (rng.randrange(256) if rng.random() < 0.05 else 0) for b in good) for _ in range(60)]
    # an IFD that claims 65535 entries, and one whose entry points far past the end
    blocks += [b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 40,
               b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x0f\x01\x02\x00" + struct.pack("<II", 10**6, 10**9)]
    for block in blocks:
        decoded = decode(jpeg(block), LIMITS, "x")        # must not raise
        meta = decoded.metadata
        assert meta.file_type == "jpeg"
        assert all(v is None or (isinstance(v, str) and v.isprintable() and len(v) <= 64)
                   for v in (meta.taken, meta.camera_make, meta.camera_model))


def test_a_huge_exif_block_is_read_or_left_empty_never_fatal():
    """A PNG's eXIf chunk has no 64 KB ceiling: one of 8 MB, mostly padding, with the camera at its start."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x010E] = "x" * (8 << 20)            # ImageDescription: 8 MB
    meta = decode(jpeg(exif.tobytes(), "PNG"), LIMITS, "x").metadata
    assert meta.camera_make in ("Canon", None) and meta.file_type == "png"


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore(tmp_path / "store" / "index.sqlite3")
    yield s
    s.close()


def exif_tree(root):
    """root/2021/trip/a.jpg (Canon, dated), root/b.png (no EXIF)."""
    (root / "2021" / "trip").mkdir(parents=True)
    (root / "2021" / "trip" / "a.jpg").write_bytes(jpeg(exif_bytes("Canon", "Canon EOS 5D", "2021:06:05 14:03:22")))
    (root / "b.png").write_bytes(jpeg(fmt="PNG", seed=2))


def test_the_indexer_stores_metadata_and_the_folder_relative_to_the_root(store, fast_extractor, tmp_path):
    exif_tree(tmp_path / "photos")
    Indexer(store, fast_extractor, LIMITS).run(scan([tmp_path / "photos"]))
    docs = {d.filename: d for d in (store.get(e.id) for e in store.entries())}
    a, b = docs["a.jpg"], docs["b.png"]
    assert (a.taken, a.camera, a.file_type, a.folder, a.meta_version) == (
        "2021-06-05T14:03:22", "Canon EOS 5D", "jpeg", "2021/trip", METADATA_VERSION)
    assert (b.taken, b.camera, b.file_type, b.folder) == (None, None, "png", "")


def test_documents_indexed_before_get_their_metadata_on_the_next_run_keeping_their_vectors(
        store, fast_extractor, tmp_path):
    exif_tree(tmp_path / "photos")
    indexer = Indexer(store, fast_extractor, LIMITS)
    indexer.run(scan([tmp_path / "photos"]))
    before = {e.id: store.get(e.id, with_vector=True) for e in store.entries()}
    # as a version without metadata wrote them
    store.upsert([Document(**{**d.__dict__, "taken": None, "camera_make": None, "camera_model": None,
                              "file_type": None, "folder": None, "meta_version": 0}) for d in before.values()])
    calls = []
    embed = fast_extractor.embed
    fast_extractor.embed = lambda *a, **k: calls.append(1) or embed(*a, **k)   # count model calls
    try:
        summary = indexer.run(scan([tmp_path / "photos"]))
    finally:
        del fast_extractor.embed
    assert calls == [] and summary.indexed == summary.reused == 2
    for doc_id, old in before.items():
        new = store.get(doc_id, with_vector=True)
        assert new.photo() == old.photo() and new.meta_version == METADATA_VERSION
        np.testing.assert_array_equal(new.vector, old.vector)
    assert indexer.run(scan([tmp_path / "photos"])).skipped == 2      # and then they are unchanged


def test_an_embedded_file_made_before_metadata_gains_the_columns(tmp_path):
    path = tmp_path / "index.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)   # the first schema, as files made before hold it
    vector = (np.ones(16, np.float32) / 4).tobytes()
    db.execute("INSERT INTO docs(id, seq, filename, path, tags, width, height, bytes, content_hash, descriptor, "
               "indexed_at, modified_at, vector) "
               "VALUES ('a', 1, 'a.jpg', '/p/a.jpg', '[]', 4, 3, 10, 'h', 'd', 1, 2, ?)", (vector,))
    db.execute("INSERT INTO meta VALUES ('descriptor', 'd'), ('seq', '1')")
    db.commit()
    db.close()
    store = EmbeddedStore(path)
    try:
        doc = store.get("a")
        assert (doc.filename, doc.taken, doc.folder, doc.meta_version) == ("a.jpg", None, None, 0)
        assert [e.meta_version for e in store.entries()] == [0]
        assert store.browse().total == 1
    finally:
        store.close()
