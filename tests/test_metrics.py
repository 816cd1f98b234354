"""Retrieval metrics on hand-made rankings (no model, no data)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.datasets import read_labels
from benchmarks.metrics import (average_precision, evaluate_vectors, groups_of_four, ndcg_at, ns_score,
                                precision_at, recall_at, summarise)


def test_average_precision_hand_computed():
    # relevant at ranks 1, 3, 6 of 3 relevant: (1/1 + 2/3 + 3/6) / 3
    assert average_precision([1, 0, 1, 0, 0, 1], 3) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert average_precision([1, 1, 1, 0], 3) == 1.0
    assert average_precision([0, 0, 0], 2) == 0.0


def test_average_precision_counts_missing_relevant_as_zero():
    # only 1 of 4 relevant retrieved (at rank 2): 0.5 / 4
    assert average_precision([0, 1, 0], 4) == pytest.approx(0.125)


def test_precision_recall_ndcg():
    hits = [0, 1, 1, 0, 1]
    assert precision_at(hits, 1) == 0.0
    assert precision_at(hits, 5) == pytest.approx(0.6)
    assert precision_at(hits, 10) == pytest.approx(0.3)       # short lists count as misses
    assert recall_at(hits, 3, 4) == pytest.approx(0.5)
    dcg = 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(hits, 10, 3) == pytest.approx(dcg / ideal)
    assert ndcg_at([1, 1, 0], 10, 2) == pytest.approx(1.0)


def test_ns_score_counts_the_top_four_only():
    assert ns_score([1, 1, 0, 1, 1]) == 3
    assert ns_score([1, 1, 1, 1]) == 4


def test_summarise_means_over_queries():
    out = summarise([([1, 0, 0], 1), ([0, 1, 0], 1)], [[1, 1, 0, 0], [1, 0, 1, 1]])
    assert out["queries"] == 2
    assert out["mAP"] == pytest.approx(0.75)
    assert out["P@1"] == pytest.approx(0.5)
    assert out["N-S"] == pytest.approx(2.5)
    assert "N-S" not in summarise([([1], 1)])


def test_evaluate_vectors_perfect_and_swapped():
    # two tight clusters of four: perfect retrieval
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:2]
    vectors = np.repeat(centres, 4, axis=0) + rng.normal(0, 0.01, (8, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = ["a"] * 4 + ["b"] * 4
    out = evaluate_vectors(vectors, labels)
    assert out["mAP"] == pytest.approx(1.0) and out["N-S"] == pytest.approx(4.0)
    # labels that disagree with the clusters: each query finds 1 relevant of 3 in its own cluster
    swapped = ["a", "a", "b", "b", "a", "a", "b", "b"]
    worse = evaluate_vectors(vectors, swapped)
    assert worse["mAP"] < 0.7 and worse["N-S"] == pytest.approx(2.0)


def test_groups_of_four():
    assert groups_of_four([1, 1, 1, 1, 2, 2, 2, 2])
    assert not groups_of_four([1, 1, 1, 1, 2, 2, 2])


def test_read_labels(tmp_path):
    (tmp_path / "labels.csv").write_text("path,group\nx/a.jpg,1\nb.jpg, 2 \n\n")
    labels = read_labels(tmp_path)
    assert labels == {str((tmp_path / "x/a.jpg").resolve()): "1", str((tmp_path / "b.jpg").resolve()): "2"}
    # another header's names, extra columns, CRLF, a byte-order mark, quoting; the CSV file given directly
    (tmp_path / "x" / "a.jpg").parent.mkdir()
    for name in ("x/a.jpg", "b, c.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "other.csv").write_text('\ufefffilename,class,source\r\nx/a.jpg,cat,web\r\n"b, c.jpg",dog,\r\n')
    assert list(read_labels(tmp_path / "other.csv").values()) == ["cat", "dog"]
    # no header: the first row names a file, so it is kept
    (tmp_path / "labels.csv").write_text("x/a.jpg,cat\nb.jpg,dog\n")
    assert list(read_labels(tmp_path).values()) == ["cat", "dog"]
    (tmp_path / "labels.csv").write_text("x/a.jpg\n")
    with pytest.raises(ValueError, match="row 1"):
        read_labels(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        read_labels(tmp_path / "nowhere")


def test_evaluate_vectors_with_separate_queries():
    vectors = np.eye(4, dtype=np.float32)
    labels = ["a", "a", "b", "b"]
    # each query points at its partner: perfect; pointing at the other class: relevant item last
    partner = vectors[[1, 0, 3, 2]]
    assert evaluate_vectors(vectors, labels, queries=partner)["mAP"] == pytest.approx(1.0)
    # pointing at the other class: the one relevant item comes third of three
    other = vectors[[2, 3, 0, 1]] + 0.5 * vectors[[3, 2, 1, 0]]
    assert evaluate_vectors(vectors, labels, queries=other)["mAP"] == pytest.approx(1 / 3)


def test_queries_without_relevant_images_are_left_out():
    out = summarise([([1, 0], 1), ([0, 0], 0)], [[1, 1], [1, 0]])
    assert out["queries"] == 1 and out["mAP"] == 1.0 and out["N-S"] == 2.0
    with pytest.raises(ValueError, match="nothing to evaluate"):
        summarise([([0], 0)])


def test_subset_keeps_every_class_or_whole_groups():
    from benchmarks.quality import subset

    classes = {f"/c{c}/{i}.jpg": f"class{c}" for c in range(10) for i in range(100)}
    small = subset(classes, 200)                       # 20 of each class
    assert len(small) == 200 and set(small.values()) == set(classes.values())
    groups = {f"/u/{i:05d}.jpg": str(i // 4) for i in range(600)}
    first = subset(groups, 200)                        # whole groups of 4, in order
    assert list(first) == list(groups)[:200] and groups_of_four(list(first.values()))
    assert subset(groups, None) is groups and subset(groups, 10_000) is groups
