"""The real server: gunicorn with gunicorn.conf.py on a free loopback port, searched over HTTP."""
from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks import malformed
from benchmarks.server import free_port, gunicorn

from .conftest import ROOT, picture

KEY = "gunicorn-test-key"


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    picture(seed, (120, 80)).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_gunicorn_serves_the_api_and_survives_malformed_requests(tmp_path, fast_env, image_folder):
    env = {**fast_env, "LOOKALIKE_API_KEY": KEY, "LOOKALIKE_MAX_IMAGE_BYTES": "1000000"}
    subprocess.run([sys.executable, "-m", "indexer", "index", str(image_folder), "--tags-from-folders"],
                   env=env, cwd=ROOT, check=True, capture_output=True)
    with gunicorn(env, tmp_path / "gunicorn.log", workers=2, threads=2) as server:
        url = server.url
        workers = server.workers
        assert len(workers) == 2
        assert requests.get(f"{url}/api/stats", timeout=10).json()["count"] == 12

        # Search by image: the photo itself first.
        data = (image_folder / "cats" / "photo_5.jpg").read_bytes()
        body = requests.post(f"{url}/api/search/image", files={"image": ("q.jpg", data)}, timeout=30).json()
        assert body["results"][0]["filename"] == "photo_5.jpg" and body["total"] == 12
        top = body["results"][0]
        # Keywords, refine, file and thumbnail.
        cats = requests.get(f"{url}/api/search", params={"q": "cats"}, timeout=10).json()
        assert cats["total"] == 6 and all(r["tags"] == ["cats"] for r in cats["results"])
        similar = requests.get(f"{url}/api/images/{top['id']}/similar", timeout=10).json()
        assert similar["total"] == 11 and top["id"] not in {r["id"] for r in similar["results"]}
        file = requests.get(url + top["image_url"], timeout=10)
        assert file.content == data and file.headers["Content-Type"] == "image/jpeg" and file.headers["ETag"]
        thumb = requests.get(url + top["thumbnail_url"], timeout=10)
        assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"

        # An upload through one worker is found by both (each request may land on either).
        new = requests.post(f"{url}/api/images", files={"image": ("new.jpg", jpeg(77))}, data={"tags": "fresh"},
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert new.status_code == 201, new.text
        for _ in range(6):
            hits = requests.post(f"{url}/api/search/image", files={"image": ("q.jpg", jpeg(77))}, timeout=30).json()
            assert hits["results"][0]["id"] == new.json()["id"] and hits["total"] == 13

        # A body over the limit is refused with JSON, not a dropped connection.
        big = requests.post(f"{url}/api/search/image", files={"image": ("big.jpg", b"\xff" * 3_000_000)}, timeout=30)
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"

        # Errors gunicorn answers itself (before the app) are JSON too.
        huge = requests.get(f"{url}/api/health", headers={"X-Junk": "j" * 20_000}, timeout=10)
        assert huge.status_code in (400, 431) and huge.json()["error"]["code"]

        # Malformed requests: no 5xx, every error JSON, no worker lost, still ready.
        outcome = malformed.run(url, count=150, clients=4, seed=7)
        assert outcome.sent == 150 and not outcome.problems, outcome.problems
        assert sum(n for status, n in outcome.statuses.items() if isinstance(status, int) and status >= 400) > 100
        assert requests.get(f"{url}/api/ready", timeout=10).status_code == 200
        assert server.workers == workers
    assert server.process.returncode == 0  # stopped gracefully by SIGTERM


def test_gunicorn_workers_map_one_shared_copy_of_the_vectors(tmp_path, fast_env, fast_settings):
    """Two workers, 1,500 vectors: both map the same snapshot file (one copy in the page cache), having
    loaded it before taking requests; a refine over HTTP gives the brute-force nearest neighbours."""
    from backend.features import weights_tag
    from backend.stores import Document, open_store
    from backend.stores.embedded import snapshot_folder

    from .conftest import FAST_SPEC
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((1500, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:020x}" for i in range(len(vectors))]
    with open_store(fast_settings) as store:
        store.upsert([Document(id=ids[i], vector=v, filename=f"{i}.jpg", path=f"/x/{i}.jpg", tags=[], width=1,
                               height=1, bytes=1, content_hash=f"{i:064x}",
                               descriptor=FAST_SPEC.descriptor_id(weights_tag("random")), indexed_at=0.0)
                      for i, v in enumerate(vectors)])
    def mapped(pid: int) -> set[str]:
        return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                if line.endswith("vectors.npy")}

    with gunicorn(fast_env, tmp_path / "gunicorn.log", workers=2, threads=1) as server:
        # "ready" may have come from one worker while the other still loads its model: give it time
        deadline = time.monotonic() + 120
        while not all(mapped(pid) for pid in server.workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        snapshots = [p for p in snapshot_folder(fast_settings.embedded_path).iterdir() if p.is_dir()]
        assert len(snapshots) == 1
        files = {pid: mapped(pid) for pid in server.workers}
        assert len(files) == 2 and all(f == {str(snapshots[0] / "vectors.npy")} for f in files.values()), files
        body = requests.get(f"{server.url}/api/images/{ids[7]}/similar", params={"limit": 5}, timeout=30).json()
        nearest = [ids[i] for i in np.argsort(-(vectors @ vectors[7]))[1:6]]
        assert [r["id"] for r in body["results"]] == nearest


def start_failing(env: dict) -> subprocess.CompletedProcess:
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    return subprocess.run([str(gunicorn_bin) if gunicorn_bin.exists() else "gunicorn", "-c", "gunicorn.conf.py",
                           "backend:create_app()"], cwd=ROOT, env={**env, "GUNICORN_BIND": "127.0.0.1:0"},
                          capture_output=True, text=True, timeout=120)


def test_gunicorn_refuses_bad_settings_with_one_line(fast_env):
    result = start_failing({**fast_env, "LOOKALIKE_IMAGE_SIZE": "big"})
    assert result.returncode != 0
    assert "error: LOOKALIKE_IMAGE_SIZE='big' is not valid" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_refuses_bad_server_settings_with_one_line(fast_env):
    result = start_failing({**fast_env, "GUNICORN_WORKERS": "two"})
    assert result.returncode != 0
    assert "error: GUNICORN_WORKERS='two' is not valid: expected a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_stops_with_one_line_when_elasticsearch_is_unreachable(fast_env):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = start_failing({**fast_env, "LOOKALIKE_STORE": url, "LOOKALIKE_ES_WAIT": "1"})
    assert result.returncode != 0
    assert f"error: Elasticsearch at {url}" in result.stderr and "Traceback" not in result.stderr
