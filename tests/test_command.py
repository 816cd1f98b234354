"""The installed `lookalike` command: the same command line as `python -m indexer`, and `serve`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from benchmarks.server import free_port

LOOKALIKE = Path(sys.executable).with_name("lookalike")


@pytest.fixture
def lookalike() -> str:
    assert LOOKALIKE.is_file(), f"the lookalike command is not installed beside {sys.executable}: run make install"
    return str(LOOKALIKE)


def test_lookalike_indexes_and_reports_stats_from_any_folder(lookalike, tmp_path, fast_env, image_folder):
    elsewhere = tmp_path / "elsewhere"   # not the checkout: the command runs from the installed package
    elsewhere.mkdir()
    run = dict(env=fast_env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    indexed = subprocess.run([lookalike, "index", str(image_folder), "--tags-from-folders", "--json"], **run)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert json.loads(indexed.stdout.strip().splitlines()[-1])["indexed"] == 12
    stats = subprocess.run([lookalike, "stats", "--json"], **run)
    assert stats.returncode == 0, stats.stderr[-2000:]
    body = json.loads(stats.stdout)
    assert body["count"] == 12 and body["precision"] == "float32"
    found = subprocess.run([lookalike, "search", "--text", "cats", "--json"], **run)
    assert found.returncode == 0 and json.loads(found.stdout)["total"] == 6, found.stderr[-2000:]


def test_lookalike_and_python_m_indexer_are_one_command_line(lookalike, fast_env, tmp_path):
    installed = subprocess.run([lookalike, "--help"], env=fast_env, capture_output=True, text=True, timeout=60)
    module = subprocess.run([sys.executable, "-m", "indexer", "--help"], env=fast_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert installed.returncode == module.returncode == 0
    assert installed.stdout.startswith("usage: lookalike ") and module.stdout.startswith("usage: python -m indexer ")
    assert installed.stdout.split("\n", 1)[1] == module.stdout.split("\n", 1)[1]
    for command in ("index", "remove", "stats", "search", "serve"):
        assert f"    {command} " in installed.stdout
    bad = subprocess.run([lookalike, "stats"], env={**fast_env, "LOOKALIKE_IMAGE_SIZE": "big"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: LOOKALIKE_IMAGE_SIZE='big' is not valid: expected a positive int")


def test_lookalike_serve_answers_and_stops_cleanly(lookalike, tmp_path, fast_env):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**fast_env, "GUNICORN_ACCESS_LOG": ""}
    with open(log, "wb") as out:   # from another folder: the settings and the page come with the package
        process = subprocess.Popen([lookalike, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env,
                                   cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if requests.get(f"{url}/api/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        assert requests.get(f"{url}/api/health", timeout=10).json() == {"status": "ok"}
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and "<html" in page.text
        assert requests.get(f"{url}/static/app.js", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text()
    assert process.returncode == 0, text[-2000:]
    assert f"Listening at: http://127.0.0.1:{port}" in text and "Shutting down: Master" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("env, line", [
    ({"GUNICORN_TIMEOUT": "soon"}, "error: GUNICORN_TIMEOUT='soon' is not valid: expected a whole number"),
    ({"LOOKALIKE_POOLING": "median"}, "error: LOOKALIKE_POOLING='median' is not valid: use one of"),
])
def test_lookalike_serve_refuses_bad_settings_with_one_line(lookalike, tmp_path, fast_env, env, line):
    result = subprocess.run([lookalike, "serve", "--bind", "127.0.0.1:0"], env={**fast_env, **env}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert line in result.stderr and "Traceback" not in result.stderr
