"""A short soak: gunicorn (2 workers) under mixed searches while the indexer and the API add and remove
pictures beside it. `python -m benchmarks.soak` runs the long version (docs/benchmarks.md)."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def test_short_soak_no_errors_nothing_lost_no_stale_ids(tmp_path, fast_env):
    result = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--fast", "--minutes", "0.4", "--clients", "3",
                             "--base", "12", "--batches", "4", "--batch-pictures", "6", "--uploads", "10",
                             "--max-growth", "0.25", "--dir", str(tmp_path / "soak"), "--json"],
                            cwd=ROOT, env=fast_env, capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and report["ok"], (report, result.stderr[-2000:])
    assert report["status_5xx"] == report["connection_errors"] == report["worker_restarts"] == 0
    assert report["unknown_ids_served"] == report["deleted_ids_served"] == 0 and report["answers_checked"] > 50
    assert report["final_count"] == report["expected_count"] and report["store_matches"]
    # every kind of request was sent, and both kinds of writer did remove something
    kinds = {key.split()[0] for key in report["statuses"]}
    assert {"image", "keyword", "similar", "file", "thumbnail", "deleted", "upload", "delete"} <= kinds
    assert report["indexed_by_cli"] >= 12 + 6 and report["removed_by_cli"] >= 6 and report["api_deletes"] >= 1
    assert len(report["memory_mib"]) == 2
