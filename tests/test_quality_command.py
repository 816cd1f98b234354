"""`python -m benchmarks.quality` on a labelled set it has never seen, as a real subprocess.

The set is built here so that the right answer is known with any weights: each group is one picture
saved four ways (JPEG, PNG, WebP, a palette GIF), which the fast untrained network still finds alike.
It carries what other people's sets carry: nested and unicode folder names, another header, extra
columns, CRLF, a damaged file and a listed file that is missing.
"""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT, picture

GROUPS = 6


def quality(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.quality", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def make_set(root):
    rows = ["file name,object,photographer"]
    for g in range(GROUPS):
        folder = root / ("vues" if g % 2 else "été/objets") / f"n°{g}"
        folder.mkdir(parents=True)
        img = picture(100 + g, size=(120, 90))
        for name, save in (("a.jpg", dict(quality=92)), ("b.png", {}), ("c.webp", dict(quality=90))):
            img.save(folder / name, **save)
            rows.append(f"{(folder / name).relative_to(root)},{g},someone")
        img.convert("P", palette=1, colors=256).save(folder / "d.gif")   # Image.Palette.ADAPTIVE
        rows.append(f"{(folder / 'd.gif').relative_to(root)},{g},")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows += ["broken.jpg,99,x", "missing.jpg,99,x"]
    (root / "labels.csv").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")


def test_quality_on_an_unseen_set(tmp_path, fast_env):
    make_set(tmp_path / "set")
    result = quality(fast_env, str(tmp_path / "set"), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 4 * GROUPS + 2 and out["indexed"] == 4 * GROUPS and out["failed"] == 2
    assert {f["path"].rsplit("/", 1)[-1] for f in out["failures"]} == {"broken.jpg", "missing.jpg"}
    assert out["queries"] == 4 * GROUPS
    # the four copies of a picture find each other first
    assert out["N-S"] >= 3.5 and out["mAP"] >= 0.9 and out["P@1"] >= 0.9
    for name in ("P@10", "recall@100", "nDCG@10"):
        assert 0.0 <= out[name] <= 1.0

    text = quality(fast_env, str(tmp_path / "set" / "labels.csv"), "--limit", "8")
    assert text.returncode == 0, text.stderr
    assert "8 of 8 images indexed" in text.stdout and "N-S" in text.stdout
    assert "Traceback" not in text.stderr


def test_quality_bad_input_is_one_line(tmp_path, fast_env):
    for args, message in (([str(tmp_path / "nowhere")], "labels.csv not found"),
                          ([str(tmp_path)], "labels.csv not found")):
        result = quality(fast_env, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "labels.csv").write_text("path,label\nonly-one-column\n")
    result = quality(fast_env, str(tmp_path))
    assert result.returncode == 2 and "row 1" in result.stderr and "Traceback" not in result.stderr


def test_store_evaluation_ranks_deep_enough_to_be_exact(tmp_path):
    """evaluate_store stops ranking once every relevant image is found; its figures must equal those
    of the full in-memory ranking, including a class scattered so that its members rank deep."""
    import numpy as np
    import pytest

    from backend.search import SearchService
    from backend.stores.base import Document
    from backend.stores.embedded import EmbeddedStore
    from benchmarks.metrics import evaluate_vectors
    from benchmarks.quality import evaluate_store

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 512))
    labels = [i % 8 for i in range(1200)]
    vectors = np.array([centres[c] * (0.0 if c == 7 else 1.0) + rng.standard_normal(512) * 1.2 for c in labels],
                       dtype=np.float32)                 # class 7: no centre, its members anywhere
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with EmbeddedStore(tmp_path / "s.sqlite3") as store:
        store.upsert([Document(id=f"{i:020d}", vector=vectors[i], filename=f"{i}.jpg", path=f"/set/{i}.jpg",
                               tags=[], width=1, height=1, bytes=1, content_hash=str(i), descriptor="test",
                               indexed_at=0.0, modified_at=0.0) for i in range(len(labels))])
        by_path = {f"/set/{i}.jpg": str(c) for i, c in enumerate(labels)}
        got = evaluate_store(store, by_path, SearchService(store, extractor=None))
    want = evaluate_vectors(vectors, labels)
    assert got["queries"] == want["queries"] == 1200
    for name in ("mAP", "P@1", "P@10", "recall@100", "nDCG@10"):
        assert got[name] == pytest.approx(want[name], abs=1e-6), name   # float32 near-ties
    assert got["mAP"] < 0.95        # not trivially perfect: the scattered class ranks deep
