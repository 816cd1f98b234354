"""The Elasticsearch-backed product end to end, against real nodes (tests/es_node.py): the indexer command
line and gunicorn exactly as deployed, with LOOKALIKE_STORE pointing at the node. Nothing is faked.

- Corel-1k with the real weights (skipped, saying why, without them): the session's embedded Corel-1k index
  moved into the session's node by `lookalike backup` and `lookalike restore`, then searched through
  gunicorn with the same checks as on the embedded store. (The indexer's writes into Elasticsearch are
  tested below and in tests/test_elastic_cluster.py.)
- Two sharded indexers at once (the fast descriptor) fill one index with every file exactly once.
- Faults on a node of the test's own: kill -9 in the middle of an indexing run and a restart on the same
  data and port; the indexer and the API report it and recover.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from backend.config import Settings
from backend.stores import open_store
from benchmarks.server import free_port, gunicorn
from indexer.scan import Shard, scan

from .conftest import ROOT, delete_indices, picture, sample_data


def run_cli(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def start_cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "indexer", *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def summary_of(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def new_alias(kind: str) -> str:
    return f"lookalike-e2e-{kind}-{uuid.uuid4().hex[:8]}"


def stored_entries(url: str, alias: str) -> list:
    """Every document's entry (id, path, ...) as the store lists them, read with a store of our own."""
    with open_store(Settings(store=url, es_index=alias, es_wait=30)) as store:
        return list(store.entries())


def generated_folder(root: Path, count: int, folders: int = 3) -> Path:
    """`count` small distinct JPEGs spread over `folders` tagged sub-folders."""
    for i in range(count):
        folder = root / f"set{i % folders}"
        folder.mkdir(parents=True, exist_ok=True)
        picture(1000 + i, size=(64, 48)).save(folder / f"pic_{i:04d}.jpg", quality=85)
    return root


# -- Corel-1k with the real weights ---------------------------------------------------------------------

class EsCorel:
    def __init__(self, root: Path, url: str, alias: str, env: dict, first_run: dict, seconds: float):
        self.root, self.url, self.alias, self.env = root, url, alias, env
        self.first_run, self.seconds = first_run, seconds


@pytest.fixture(scope="module")
def es_corel(elastic_nodes, corel_index, tmp_path_factory):
    """The session's Corel-1k index (conftest.py `corel_index`: the real command line and weights) moved into
    the session's node by the real command line: `lookalike backup`, then `lookalike restore` with
    LOOKALIKE_STORE naming the node. The documents go over as they are, so the model runs once a session."""
    url = elastic_nodes.url("8")
    alias = new_alias("corel")
    saved = tmp_path_factory.mktemp("es-corel-backup") / "backup"
    backed_up = run_cli(corel_index.env, "backup", str(saved), "--json")
    assert backed_up.returncode == 0, backed_up.stderr[-2000:]
    env = {**corel_index.env, "LOOKALIKE_STORE": url, "LOOKALIKE_ES_INDEX": alias,
           "LOOKALIKE_DATA_DIR": str(tmp_path_factory.mktemp("es-corel-data"))}
    started = time.monotonic()
    try:
        result = run_cli(env, "restore", str(saved), "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        yield EsCorel(corel_index.root, url, alias, env, summary_of(result.stdout), time.monotonic() - started)
    finally:
        delete_indices(url, alias)


@pytest.mark.real_weights
@pytest.mark.real_data
def test_corel_moved_into_elasticsearch_with_folder_tags(es_corel, corel_index):
    print(f"Corel-1k moved into Elasticsearch: {es_corel.seconds:.0f} s")
    assert (es_corel.first_run["backend"], es_corel.first_run["count"]) == ("embedded", 1000)
    entries = stored_entries(es_corel.url, es_corel.alias)
    files = {str(f.path) for f in scan([es_corel.root])}
    assert len(entries) == 1000 and {e.path for e in entries} == files
    assert all(e.tags == (Path(e.path).parent.name,) for e in entries)
    ids = [e.id for e in entries]
    with open_store(Settings.from_env(es_corel.env)) as store, open_store(corel_index.settings) as embedded:
        assert store.count() == 1000
        counts = dict(store.tag_counts())
        moved, original = store.documents(ids), embedded.documents(ids)
        assert {i: (d.labels, d.near, d.taken) for i, d in moved.items()} == \
            {i: (d.labels, d.near, d.taken) for i, d in original.items()}
        assert sorted(store.near_pairs(0.6)) == sorted(embedded.near_pairs(0.6))
    assert len(counts) == 10 and set(counts.values()) == {100}
    assert all(d.labels is not None for d in moved.values())          # content labels came along

    # the indexer's next run over the same photos finds them all indexed: nothing to compute again
    again = run_cli(es_corel.env, "index", str(es_corel.root), "--tags-from-folders", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (summary_of(again.stdout)["indexed"], summary_of(again.stdout)["skipped"]) == (0, 1000)


@pytest.mark.real_weights
@pytest.mark.real_data
def test_corel_through_gunicorn_on_elasticsearch(es_corel, tmp_path):
    """The checks the embedded store passes (tests/test_real_corel.py, docs/api.md), over HTTP."""
    horse = es_corel.root / "horses" / "700.jpg"
    with gunicorn(es_corel.env, tmp_path / "gunicorn.log", workers=1, threads=2, ready_timeout=300) as server:
        url = server.url
        stats = requests.get(f"{url}/api/stats", timeout=30).json()
        assert (stats["backend"], stats["count"]) == ("elasticsearch", 1000)

        upload = requests.post(f"{url}/api/search/image", params={"limit": 10},
                               files={"image": ("700.jpg", horse.read_bytes())}, timeout=120)
        assert upload.status_code == 200, upload.text
        top = upload.json()["results"]
        assert len(top) == 10 and top[0]["filename"] == "700.jpg" and top[0]["score"] > 0.999
        assert sum("horses" in r["tags"] for r in top) >= 9, [(r["filename"], r["tags"]) for r in top]

        words = requests.get(f"{url}/api/search", params={"q": "horses", "limit": 100}, timeout=30).json()
        assert words["total"] == 100 and len(words["results"]) == 100
        assert all(r["tags"] == ["horses"] for r in words["results"])

        own = top[0]["id"]
        similar = requests.get(f"{url}/api/images/{own}/similar", params={"limit": 10}, timeout=30).json()
        assert own not in {r["id"] for r in similar["results"]} and len(similar["results"]) == 10
        assert sum("horses" in r["tags"] for r in similar["results"]) >= 9

        # "More like this" for 50 photos, 5 of each class: HNSW finds about what the exact search does
        with open(es_corel.root / "labels.csv", newline="") as f:
            labels = {row["path"]: row["label"] for row in csv.DictReader(f)}
        ids = {e.path: e.id for e in stored_entries(es_corel.url, es_corel.alias)}
        same_class = []
        for rel in sorted(labels)[::20]:
            label, doc_id = labels[rel], ids[str((es_corel.root / rel).resolve())]
            hits = requests.get(f"{url}/api/images/{doc_id}/similar", params={"limit": 10}, timeout=30).json()
            assert doc_id not in {h["id"] for h in hits["results"]}
            same_class.append(sum(label in h["tags"] for h in hits["results"]))
        mean = sum(same_class) / len(same_class)
        print(f"Elasticsearch, similar: mean same-class images in the top 10 over 50 photos: {mean:.2f}")
        assert len(same_class) == 50 and mean >= 8.0


# -- kNN totals on a real node --------------------------------------------------------------------------

def test_knn_total_counts_every_match_so_pages_follow(es_url):
    """A page of a kNN search says how many documents match in all (as the embedded store does), not just
    the k asked for: the web page offers "Load more" from that total."""
    import numpy as np

    from backend.stores import Document

    alias = new_alias("total")
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    try:
        with open_store(Settings(store=es_url, es_index=alias)) as store:
            store.upsert([Document(id=f"t{i:02d}", vector=v, filename=f"{i}.jpg", path=f"/t/{i}.jpg",
                                   tags=["even" if i % 2 == 0 else "odd"], width=1, height=1, bytes=1,
                                   content_hash=f"{i:064x}", descriptor="d16", indexed_at=0.0)
                          for i, v in enumerate(vectors)])
            first = store.knn(vectors[0], descriptor="d16", limit=24)
            assert (len(first.hits), first.total) == (24, 30)
            rest = store.knn(vectors[0], descriptor="d16", offset=24, limit=24)
            assert (len(rest.hits), rest.total) == (6, 30)
            assert store.knn(vectors[0], descriptor="d16", limit=5, exclude=["t00"]).total == 29
            assert store.knn(vectors[0], descriptor="d16", limit=5, tags=["even"]).total == 15
            assert store.knn(vectors[0], descriptor="d16", limit=20, tags=["even"]).total == 15
    finally:
        delete_indices(es_url, alias)


# -- two sharded indexers at once -----------------------------------------------------------------------

def test_two_shard_indexers_at_once_fill_one_index(fast_env, es_url, tmp_path):
    """--shard 0/2 and --shard 1/2 started together on a fresh alias (both race to create the index): every
    file once. Corel-1k with the fast descriptor when the shared photos are there, else generated pictures."""
    data = sample_data()
    if data is not None and (data / "corel1k").is_dir():
        root, expected_count = data / "corel1k", 1000
    else:
        root, expected_count = generated_folder(tmp_path / "pictures", 300), 300
    files = {str(f.path) for f in scan([root])}
    assert len(files) == expected_count
    shares = [{str(f.path) for f in scan([root], shard=Shard(i, 2))} for i in range(2)]
    alias = new_alias("shards")
    env = {**fast_env, "LOOKALIKE_STORE": es_url, "LOOKALIKE_ES_INDEX": alias}
    processes = [start_cli(env, "index", str(root), "--tags-from-folders", "--shard", f"{i}/2", "--json")
                 for i in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
        for p, (out, err) in zip(processes, outputs):
            assert p.returncode == 0, err[-2000:]
        summaries = [summary_of(out) for out, _ in outputs]
        assert [s["indexed"] for s in summaries] == [len(s) for s in shares]
        assert all(s["failed"] == 0 for s in summaries)
        entries = stored_entries(es_url, alias)
        paths = [e.path for e in entries]
        assert len(paths) == expected_count and set(paths) == files      # every file, none twice
        with open_store(Settings(store=es_url, es_index=alias)) as store:
            assert store.count() == expected_count
            assert sum(n for _, n in store.tag_counts()) == expected_count
        from elasticsearch import Elasticsearch
        with Elasticsearch(es_url) as client:
            assert len(client.indices.get_alias(name=alias)) == 1        # one physical index behind the alias
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.communicate()
        delete_indices(es_url, alias)


# -- kill -9 of the node in the middle of an indexing run ---------------------------------------------------

KILL_FILES, KILL_BATCH = 200, 8   # 25 batches: the kill lands after the 6th or so


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g} s: {what}")


class Phases:
    """Prints how long each step of a long test took (shown with pytest -s)."""

    def __init__(self):
        self.last = time.monotonic()

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        print(f"{what}: {now - self.last:.1f} s")
        self.last = now


def es_count(url: str, alias: str) -> int:
    """Documents behind the alias (0 when unreachable or not created yet), without the store's retries."""
    try:
        answer = requests.get(f"{url}/{alias}/_count", timeout=2)
        return answer.json().get("count", 0) if answer.status_code == 200 else 0
    except requests.RequestException:
        return 0


def test_kill_9_mid_run_then_restart_on_the_same_data(elastic_nodes, fast_env, tmp_path):
    pictures = generated_folder(tmp_path / "pictures", KILL_FILES)
    files = {str(f.path) for f in scan([pictures])}
    home, port, alias = tmp_path / "es-home", free_port(), new_alias("kill")
    phase = Phases()
    node = elastic_nodes.start_private("8", port=port, home=home)
    phase("private node started")
    env = {**fast_env, "LOOKALIKE_STORE": node.url, "LOOKALIKE_ES_INDEX": alias, "LOOKALIKE_ES_WAIT": "20"}
    command = ["index", str(pictures), "--tags-from-folders", "--batch-size", str(KILL_BATCH), "--json"]
    indexer = None
    try:
        with gunicorn(env, tmp_path / "gunicorn.log", workers=2, threads=2) as server:
            workers = server.workers
            assert len(workers) == 2
            phase("gunicorn ready")

            indexer = start_cli(env, *command)
            # mid-run: some batches written, most not
            written = wait_until(lambda: indexer.poll() is None and es_count(node.url, alias) >= 6 * KILL_BATCH
                                 and es_count(node.url, alias), 300, "6 batches indexed while the run goes on")
            assert indexer.poll() is None and written < KILL_FILES
            some_id = stored_entries(node.url, alias)[0].id
            phase(f"{written} documents written")
            node.kill()

            out, err = indexer.communicate(timeout=120)
            # the indexer's one "model: ..." line comes first; then the error is one line
            lines = [line for line in err.strip().splitlines() if not line.startswith("model: ")]
            assert indexer.returncode == 1, err
            assert len(lines) == 1 and "Traceback" not in err, err
            assert lines[0].startswith(f"error: Elasticsearch at {node.url}"), err
            phase("the indexer stopped")

            # the node is down: every search is a 503 store_unavailable, /api/ready a 503, quickly
            jpeg = (pictures / "set0" / "pic_0000.jpg").read_bytes()
            searches = [lambda: requests.get(f"{server.url}/api/search", params={"q": "pic"}, timeout=30),
                        lambda: requests.get(f"{server.url}/api/images/{some_id}/similar", timeout=30),
                        lambda: requests.get(f"{server.url}/api/images/{some_id}", timeout=30),
                        lambda: requests.post(f"{server.url}/api/search/image", files={"image": ("q.jpg", jpeg)},
                                              timeout=60)]
            for search in searches * 2:        # twice: both workers, most likely
                started = time.monotonic()
                answer = search()
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "store_unavailable", answer.text
                assert node.url in answer.json()["error"]["message"]
                assert time.monotonic() - started < 15
            ready = requests.get(f"{server.url}/api/ready", timeout=30)
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready", ready.text
            assert ready.json()["checks"] == {"model": True, "store": False}

            phase("503s while down")
            node = elastic_nodes.start_private("8", port=port, home=home)    # the same data and port
            phase("node started again")
            wait_until(lambda: all(requests.get(f"{server.url}/api/ready", timeout=30).status_code == 200
                                   for _ in range(4)), 120, "/api/ready 200 again")
            for _ in range(4):
                answer = requests.get(f"{server.url}/api/search", params={"q": "pic", "limit": 5}, timeout=30)
                assert answer.status_code == 200 and answer.json()["total"] >= written, answer.text
                similar = requests.get(f"{server.url}/api/images/{some_id}/similar", timeout=30)
                assert similar.status_code == 200, similar.text
            assert server.workers == workers                   # the same processes: nothing restarted
            phase("200s again")

            again = run_cli(env, *command)
            phase("the same command again")
            assert again.returncode == 0, again.stderr[-2000:]
            summary = summary_of(again.stdout)
            assert summary["failed"] == 0 and summary["indexed"] + summary["skipped"] == KILL_FILES
            # what was written before the kill is kept (at most the batch in flight is lost)
            assert summary["skipped"] >= written - KILL_BATCH
            paths = [e.path for e in stored_entries(node.url, alias)]
            assert len(paths) == KILL_FILES and set(paths) == files     # every file once
            assert es_count(node.url, alias) == KILL_FILES
            assert requests.get(f"{server.url}/api/stats", timeout=30).json()["count"] == KILL_FILES
            assert server.workers == workers
    finally:
        if indexer is not None and indexer.poll() is None:
            indexer.kill()
            indexer.communicate()
        node.stop()
