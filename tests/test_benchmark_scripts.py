"""The speed benchmarks' documented commands still run, on small inputs and the fast descriptor.

They assert what each script promises beside its timings (docs/benchmarks.md), not the timings:
timings are measured by running the scripts, never by tests.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, picture


def run(env: dict, *args: str) -> dict:
    """The command's last JSON line."""
    return run_all(env, *args)[-1]


def run_all(env: dict, *args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", *args, "--json"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.strip().splitlines() if line.startswith("{")]


def test_indexing_benchmark_four_modes_same_vectors(tmp_path, fast_env):
    for i in range(10):
        picture(i, size=(120, 90)).save(tmp_path / f"p{i}.jpg", quality=90)
    out = run(fast_env, "benchmarks.indexing", str(tmp_path), "--chunk", "5", "--batch-size", "4")
    assert out["images"] == 10 and out["descriptor"].startswith("vgg16-random-conv5-gem1.5-ar64")
    # at float32 the ways compute one descriptor: the comparison is between pipelines, not descriptors
    assert out["precision"] == "float32" and out["min_cosine_float32_to_c"] > 0.9999
    assert out["min_cosine_a_to_float32"] > 0.9999 and out["a_over_f"] == 1.0
    for mode in "abcd":
        assert out[f"{mode}_img_s"] > 0 and out[f"{mode}_gflop_s"] > 0
    assert out["matmul_gflop_s"] > 0


def test_store_size_benchmark_small_store(tmp_path, fast_env):
    rows = run_all(fast_env, "benchmarks.store_size", "--sizes", "2000", "--queries", "5", "--dir", str(tmp_path))
    assert [r["worker"] for r in rows] == ["private", "first", "next"]
    for out in rows:
        assert out["documents"] == 2000 and out["queries"] == 5
        assert 0 < out["knn_p50_ms"] <= out["knn_p95_ms"] and 0 < out["refine_p50_ms"] <= out["refine_p95_ms"]
        assert out["rss_mib_after_load"] > 0 and out["load_seconds"] > 0
    # the baseline holds its own vectors; the first worker writes the snapshot and the next one maps it
    private, first, nxt = rows
    assert private["snapshot"] is None and first["snapshot"] and nxt["snapshot"] == first["snapshot"]
    again = run(fast_env, "benchmarks.store_size", "--sizes", "2000", "--queries", "5", "--dir", str(tmp_path))
    assert again["fill_seconds"] == 0.0          # the filled store is reused


def test_feedback_benchmark_rounds_and_cost(tmp_path, fast_env):
    folder = tmp_path / "set"
    folder.mkdir()
    rows = ["path,label"]
    for i in range(12):
        picture(i % 3 * 10 + i // 3, size=(96, 64)).save(folder / f"p{i}.jpg", quality=90)
        rows.append(f"p{i}.jpg,{i % 3}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    out = run(fast_env, "benchmarks.feedback", str(folder), "--data-dir", str(tmp_path / "data"), "--marks", "2",
              "--cost", "2000", "--dir", str(tmp_path / "stores"))
    assert out["images"] == 12 and set(out["results"]) == {"rocchio", "fusion", "classifier"}
    quality = run(fast_env, "benchmarks.quality", str(folder))
    for rounds in out["results"].values():
        assert len(rounds) == 3
        assert rounds[0]["mAP"] == rounds[0]["residual mAP"] == pytest.approx(quality["mAP"], abs=1e-9)
        assert all(0 <= r["P@24"] <= 1 and 0 < r["mAP"] <= 1 for r in rounds)
    assert out["cost"]["documents"] == 2000
    assert out["cost"]["rocchio"]["knn_calls"] == 1 and out["cost"]["classifier"]["knn_calls"] == 2
    assert all(c["ms"] > 0 for k, c in out["cost"].items() if k != "documents")


def test_backup_benchmark_small_synthetic_set(tmp_path, fast_env):
    rows = run_all(fast_env, "benchmarks.backup", "--synthetic", "300", "--stores", "embedded", "--work", str(tmp_path))
    assert [(r["set"], r["store"], r["documents"]) for r in rows] == [("synthetic-300", "embedded", 300)]
    assert rows[0]["backup_s"] > 0 and rows[0]["restore_s"] > 0 and rows[0]["backup_mb"] > 0


def test_benchmark_commands_explain_bad_input_in_one_line(tmp_path, fast_env):
    cases = [
        (["benchmarks.indexing", str(tmp_path / "nowhere")], "no such folder"),
        (["benchmarks.indexing", str(tmp_path)], "no images under"),
        (["benchmarks.descriptors", "--weights", str(tmp_path / "w.h5")], "no such file"),
        (["benchmarks.descriptors", "--weights", "random", "--data", str(tmp_path)], "corel1k/labels.csv"),
        (["benchmarks.model_cost", "--weights", "random", "--data", str(tmp_path)], "ukbench-600/labels.csv"),
    ]
    for args, message in cases:
        result = subprocess.run([sys.executable, "-m", *args], env=fast_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_elastic_benchmark_small_synthetic_set(es_url, fast_env):
    rows = run_all(fast_env, "benchmarks.elastic", "--url", es_url, "--datasets", "--synthetic", "200",
                   "--queries", "5", "--types", "hnsw", "int8_hnsw", "--candidates", "100", "--oversample", "3")
    by_row = {}
    for row in rows:
        by_row.setdefault(row["row"], []).append(row)
    assert by_row["exact"][0]["documents"] == 200 and by_row["exact"][0]["upsert_docs_per_s"] > 0
    assert by_row["index"][0]["written"]["docs"] == 200 and by_row["merged"][0]["merged"]["segments"] == 1
    assert [(r["type"], r["state"], r["oversample"]) for r in by_row["knn"]] == [
        ("hnsw", "written", 0), ("hnsw", "merged", 0), ("int8_hnsw", "written", 3), ("int8_hnsw", "merged", 3)]
    for knn in by_row["knn"]:
        assert knn["queries"] == 5 and 0.5 <= knn["recall@10"] <= 1 and 0.5 <= knn["recall@100"] <= 1
        assert 0 < knn["es_p50_ms"] <= knn["es_p95_ms"] and 0 < knn["exact_p50_ms"]
        # float hnsw reports the true cosine, and so does int8 rescored by the float vectors
        assert knn["max_score_error"] < 1e-5
    # the benchmark removes what it created
    from elasticsearch import Elasticsearch
    with Elasticsearch(es_url) as client:
        assert not client.indices.get(index="esbench-*", expand_wildcards="all")


def test_the_synthetic_mixture_lies_among_the_photos_mixed_into_it():
    """--mix: the synthetic vectors share the photos' space, so the photos are not a region of their own
    that a graph search has to find from outside (random pairs of photos are at cosine ~0.3)."""
    import numpy as np

    from benchmarks.elastic import synthetic
    rng = np.random.default_rng(1)
    photos = np.abs(rng.standard_normal((600, 512))).astype(np.float32) ** 3    # all positive, as pooled ReLU maps
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    mixture = synthetic(1500, 0, like=photos).vectors
    apart, among = synthetic(1500, 0).vectors @ photos.T, mixture @ photos.T
    assert abs(apart.mean()) < 0.05 and among.mean() > 0.2
    assert among.max(axis=0).mean() > apart.max(axis=0).mean() + 0.15       # each photo's nearest is nearer
    assert 0.35 < (mixture[:500] @ mixture[500:].T).mean() < 0.55   # the mixture's own shape (random pairs ~0.45)


def test_elastic_writes_benchmark_compares_both_paths_on_the_same_documents(es_url, fast_env):
    rows = run_all(fast_env, "benchmarks.elastic_writes", "--url", es_url, "--documents", "1200", "--round", "600",
                   "--batch", "1200", "--replicas", "0")
    sides = {row["side"]: row for row in rows if row["row"] == "side"}
    for side in ("before", "now"):       # every document once, each found by its own vector
        assert sides[side]["count"] == 1200 and sides[side]["found_by_own_vector"] == "200/200"
        assert sides[side]["docs_per_s"] > 0
    result = next(row for row in rows if row["row"] == "result")
    assert result["vectors_read_back_exactly"] == "200/200" and result["speedup"] > 0
    from elasticsearch import Elasticsearch
    with Elasticsearch(es_url) as client:
        assert not client.indices.get(index="eswrites-*", expand_wildcards="all")


def test_duplicates_scale_report_links_and_end_to_end_indexing(tmp_path, fast_env, es_url):
    out = run(fast_env, "benchmarks.duplicates_scale", "--documents", "3000", "--new", "32", "--repeat", "1")
    assert out["store"] == "embedded" and out["documents"] == 3000
    assert out["near_groups"] == out["groups"] == 45            # 30 originals with two copies, 15 identical pairs
    # each new copy links to its original: a group of its own, or one more member of the original's
    assert out["links_found"] == "32/32" and 45 < out["near_groups_after_new"] <= 45 + 32
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(12):
        picture(i, size=(120, 90)).save(folder / f"p{i}.jpg", quality=90)
    picture(0, size=(120, 90)).resize((100, 75)).save(folder / "p0-small.jpg", quality=80)
    (row,) = run(fast_env, "benchmarks.duplicates_scale", "--indexing", str(folder), "--pictures", "13")["indexing"]
    assert row["pictures"] == 13 and row["labels"] is False       # as configured (the fast environment has none)
    assert set(row["ms_per_picture"]) == {"duplicates", "without"} and min(row["ms_per_picture"].values()) > 0
    # the same into Elasticsearch: every picture indexed both ways (the run checks it), its indices removed after
    (row,) = run(fast_env, "benchmarks.duplicates_scale", "--indexing", str(folder), "--pictures", "13",
                 "--url", es_url)["indexing"]
    assert (row["store"], row["pictures"]) == ("elasticsearch", 13) and min(row["ms_per_picture"].values()) > 0
    from elasticsearch import Elasticsearch
    with Elasticsearch(es_url) as client:
        assert not client.indices.get(index="lookalike-alternating-*", expand_wildcards="all")


def test_labels_cost_runs_both_ways_in_alternating_chunks(tmp_path, fast_env):
    folder = tmp_path / "set"
    folder.mkdir()
    rows = ["path,label"]
    for i in range(8):
        picture(i, size=(120, 90)).save(folder / f"p{i}.jpg", quality=90)
        rows.append(f"p{i}.jpg,{i % 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    out = run(fast_env, "benchmarks.labels", str(folder), "--speed", "8", "--chunk", "4")["speed"]
    assert out["images"] == 8 and out["chunk"] == 4 and set(out["seconds"]) == {"labels", "no labels"}
    assert out["labels_over_no_labels"] == out["seconds"]["labels"] / out["seconds"]["no labels"] > 0
