"""The speed benchmarks' documented commands still run, on small inputs and the fast descriptor.

They assert what each script promises beside its timings (docs/benchmarks.md), not the timings:
timings are measured by running the scripts, never by tests.
"""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import picture


def run(env: dict, *args: str) -> dict:
    """The command's last JSON line."""
    return run_all(env, *args)[-1]


def run_all(env: dict, *args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", *args, "--json"], env=env, cwd=env["PYTHONPATH"],
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


def test_benchmark_commands_explain_bad_input_in_one_line(tmp_path, fast_env):
    cases = [
        (["benchmarks.indexing", str(tmp_path / "nowhere")], "no such folder"),
        (["benchmarks.indexing", str(tmp_path)], "no images under"),
        (["benchmarks.descriptors", "--weights", str(tmp_path / "w.h5")], "no such file"),
        (["benchmarks.descriptors", "--weights", "random", "--data", str(tmp_path)], "corel1k/labels.csv"),
        (["benchmarks.model_cost", "--weights", "random", "--data", str(tmp_path)], "ukbench-600/labels.csv"),
    ]
    for args, message in cases:
        result = subprocess.run([sys.executable, "-m", *args], env=fast_env, cwd=fast_env["PYTHONPATH"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
