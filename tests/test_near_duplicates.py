"""The near-duplicate check (backend/near_duplicates.py) on real photos: every edit the product promises to see
through scores at least the default near min_score; another shot of the same scene (UKBench's next view of an
object, a Corel photo of the same class) scores under it. The edits are the duplicate benchmark's own
(benchmarks/duplicate_set.py), drawn with a fixed seed. Skips without the shared photo sets."""
from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageOps

from backend import near_duplicates
from backend.duplicates import NEAR_MIN_SCORE, cosine_score, near_score
from backend.stores.base import Document
from benchmarks import duplicate_set

from .conftest import NO_DATA, picture, sample_data


def photo(relative: str) -> Image.Image:
    data = sample_data()
    if data is None or not (data / relative).is_file():
        pytest.skip(NO_DATA)
    with Image.open(data / relative) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def saved(copy: duplicate_set.Copy) -> Image.Image:
    """The copy as a file would hold it (its format's losses included), decoded again."""
    buffer = io.BytesIO()
    image = copy.image.convert("P") if copy.fmt == "GIF" else copy.image
    image.save(buffer, copy.fmt, **copy.save)
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        return im.convert("RGB")


def score(a: Image.Image, b: Image.Image) -> float:
    return near_duplicates.similarity(near_duplicates.signature(a), near_duplicates.signature(b))


@pytest.mark.parametrize("original", ["corel1k/horses/700.jpg", "corel1k/beach/100.jpg",
                                      "ukbench-600/ukbench00062.jpg"])
@pytest.mark.parametrize("edit", sorted(duplicate_set.EDITS))
def test_every_promised_edit_is_seen_through(original, edit):
    im = photo(original)
    rng = random.Random(f"{original}/{edit}")
    copy = saved(duplicate_set.EDITS[edit](im, rng))
    assert score(im, copy) >= NEAR_MIN_SCORE, copy
    assert score(copy, im) >= NEAR_MIN_SCORE, copy             # whichever of the two was indexed first


@pytest.mark.parametrize("first, second", [
    ("ukbench-600/ukbench00062.jpg", "ukbench-600/ukbench00063.jpg"),   # the next view: the camera moved a little
    ("ukbench-600/ukbench00000.jpg", "ukbench-600/ukbench00001.jpg"),
    ("corel1k/horses/700.jpg", "corel1k/horses/701.jpg"),               # another photo of the class
])
def test_another_shot_of_the_scene_is_not_a_copy(first, second):
    assert score(photo(first), photo(second)) < NEAR_MIN_SCORE


def test_a_picture_is_itself_and_unrelated_or_flat_pictures_are_not_alike():
    a, b = picture(1, (320, 240)), picture(2, (320, 240))
    assert score(a, a) == pytest.approx(1.0, abs=1e-6)
    assert score(a, b) == 0.0
    flat = Image.new("RGB", (200, 150), (120, 130, 140))        # nothing to place: no transform, no score
    assert score(flat, flat) == 0.0 and score(flat, a) == 0.0


def test_a_signature_of_an_older_version_is_not_compared():
    a = picture(3, (320, 240))
    current, older = near_duplicates.signature(a), bytes(40 * 40)
    assert near_duplicates.is_current(current) and not near_duplicates.is_current(older)
    assert not near_duplicates.is_current(None)
    first = Document(id="a", vector=None, filename="a.jpg", path="/a.jpg", tags=[], width=1, height=1, bytes=1,
                     content_hash="x", descriptor="d", indexed_at=0.0, modified_at=0.0, signature=current)
    second = Document(**{**vars(first), "id": "b", "content_hash": "y", "signature": older})
    # scored by the vectors' cosine alone, on the same scale: only very close vectors reach the default
    assert near_score(first, second, 0.995) == cosine_score(0.995) == pytest.approx(NEAR_MIN_SCORE)
    assert near_score(first, second, 0.97) == 0.0
    assert near_score(first, Document(**{**vars(second), "content_hash": "x"}), 0.5) == 1.0   # the same bytes
