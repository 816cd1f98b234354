"""Faults on a real three-node Elasticsearch cluster (tests/es_node.py start_cluster, every node
master-eligible and data), with the index in three shards of one replica each (LOOKALIKE_ES_REPLICAS's
default on three nodes), so every node holds two shard copies, and the app under gunicorn given all three
URLs and several clients searching through it the whole time.

One cluster (the session's, conftest.py) and one indexed set serve every test here; each test leaves all
three nodes running and the cluster green. The indexer and gunicorn are the real command line and server,
with the fast descriptor (the faults are about the store, not the model).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.server import gunicorn
from indexer.scan import Shard, scan

from .conftest import FAST_ENV, delete_indices, picture
from .test_elastic_e2e import generated_folder, new_alias, run_cli, start_cli, stored_entries, summary_of, wait_until

# LOOKALIKE_ES_TIMEOUT here: above the ~6 s the cluster takes to drop a stalled node (CLUSTER_SETTINGS), so a
# search waiting on that node's shards is answered by a replica before the client gives up on it.
TIMEOUT = 8
API_KEY = "cluster-test-key"
BASE_FILES = 90


class App:
    def __init__(self, cluster, env: dict, url: str, alias: str, root: Path, ids: list[str]):
        self.cluster, self.env, self.url, self.alias, self.root, self.ids = cluster, env, url, alias, root, ids

    @property
    def store_url(self) -> str:
        return self.env["LOOKALIKE_STORE"]

    def paths(self) -> list[str]:
        return [entry.path for entry in stored_entries(self.store_url, self.alias)]


@pytest.fixture(scope="module")
def app(elastic_nodes, tmp_path_factory):
    cluster = elastic_nodes.cluster()
    tmp = tmp_path_factory.mktemp("cluster")
    root = tmp / "pictures"
    generated_folder(root / "base", BASE_FILES)
    alias = new_alias("cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp / "data"), "LOOKALIKE_STORE": ",".join(cluster.urls),
                "LOOKALIKE_ES_INDEX": alias, "LOOKALIKE_ES_SHARDS": "3", "LOOKALIKE_ES_TIMEOUT": str(TIMEOUT),
                "LOOKALIKE_API_KEY": API_KEY})
    first = run_cli(env, "index", str(root / "base"), "--tags-from-folders", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    assert summary_of(first.stdout)["indexed"] == BASE_FILES
    try:
        with gunicorn(env, tmp / "gunicorn.log", workers=2, threads=4) as server:
            ids = [entry.id for entry in stored_entries(env["LOOKALIKE_STORE"], alias)]
            yield App(cluster, env, server.url, alias, root, ids)
    finally:
        for node in cluster.nodes:
            if node.running:
                delete_indices(node.url, alias)
                break


@pytest.fixture
def healthy(app):
    """Every node running and the cluster green before and after the test."""
    def heal():
        for node in app.cluster.nodes:
            node.resume()
            if not node.running:
                node.start()
        app.cluster.wait_for("green", timeout=180)
    heal()
    yield app.cluster
    heal()


class Searches:
    """`clients` threads searching through the app without a pause (words, similar, by image, refine), each
    answer recorded as (kind, status or error, seconds, finished at)."""

    def __init__(self, app: App, clients: int = 3):
        self.app, self.clients = app, clients
        self.answers: list[tuple[str, object, float, float]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jpeg = (app.root / "base" / "set0" / "pic_0000.jpg").read_bytes()

    def _requests(self, session: requests.Session, i: int):
        url, ids = self.app.url, self.app.ids
        one, other = ids[i % len(ids)], ids[(i * 7 + 3) % len(ids)]
        timeout = 4 * TIMEOUT          # generous: slowness is measured, not cut off
        return [("words", lambda: session.get(f"{url}/api/search", params={"q": "pic", "limit": 10},
                                              timeout=timeout)),
                ("similar", lambda: session.get(f"{url}/api/images/{one}/similar", params={"limit": 10},
                                                timeout=timeout)),
                ("image", lambda: session.post(f"{url}/api/search/image", params={"limit": 10},
                                               files={"image": ("q.jpg", self._jpeg)}, timeout=timeout)),
                ("refine", lambda: session.post(f"{url}/api/search/refine", json={"positive": [one],
                                                "negative": [other] if other != one else []}, timeout=timeout))]

    def _run(self, client: int) -> None:
        i = client
        with requests.Session() as session:
            while not self._stop.is_set():
                for kind, call in self._requests(session, i):
                    started = time.monotonic()
                    try:
                        answer = call()
                        ok = answer.status_code == 200 and len(answer.json()["results"]) > 0
                        outcome: object = 200 if ok else f"{answer.status_code}: {answer.text[:300]}"
                    except (requests.RequestException, ValueError, KeyError) as exc:
                        outcome = f"{type(exc).__name__}: {exc}"
                    now = time.monotonic()
                    self.answers.append((kind, outcome, now - started, now))
                i += self.clients

    def __enter__(self) -> "Searches":
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(self.clients)]
        for thread in self._threads:
            thread.start()
        self.wait_for(3 * self.clients)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10 * TIMEOUT)

    def wait_for(self, count: int, after: float = 0.0, timeout: float = 120) -> None:
        """Until `count` more answers have come back after the time `after` (time.monotonic())."""
        wait_until(lambda: sum(a[3] > after for a in self.answers) >= count, timeout, f"{count} answers")

    def go_on(self, seconds: float) -> None:
        """Keep searching for `seconds`, and at least until every client has answered once more."""
        started = time.monotonic()
        time.sleep(seconds)
        self.wait_for(self.clients, after=started + seconds)

    def failures(self) -> list:
        return [a for a in self.answers if a[1] != 200]

    def summary(self) -> str:
        slowest = max(a[2] for a in self.answers)
        return f"{len(self.answers)} searches, {len(self.failures())} failed, slowest {slowest:.1f} s"


def non_master(cluster):
    master = cluster.master()
    return next(node for node in cluster.nodes if node is not master)


def ready(app: App) -> dict:
    answer = requests.get(f"{app.url}/api/ready", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def generated_folder_at(root: Path, count: int, start: int) -> Path:
    """`count` pictures unlike every other folder's (seeds from `start`)."""
    for i in range(count):
        folder = root / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        picture(start + i, size=(64, 48)).save(folder / f"r_{i:04d}.jpg", quality=85)
    return root


def _jpeg(seed: int) -> bytes:
    import io

    out = io.BytesIO()
    picture(seed, size=(64, 48)).save(out, "JPEG", quality=85)
    return out.getvalue()


def _requests_from_clients(cluster, node) -> int:
    """HTTP requests the Python client (not this test's own urllib checks) has sent to `node` so far."""
    stats = cluster.request(f"/_nodes/{node.name}/stats/http")
    clients = next(iter(stats["nodes"].values()))["http"].get("clients", [])
    return sum(c.get("request_count", 0) for c in clients if "elasticsearch-py" in c.get("agent", ""))


def test_kill_9_of_a_data_node_while_searching_and_indexing(app, healthy):
    """0 failed searches; the indexing run finishes (or the same command again does) with every file once."""
    more = generated_folder_at(app.root / "killed", 160, start=30_000)
    before = set(app.paths())
    command = ["index", str(more), "--tags-from-folders", "--batch-size", "4", "--json"]
    victim = non_master(healthy)
    assert "degraded" not in ready(app)
    with Searches(app) as searches:
        indexer = start_cli(app.env, *command)
        try:
            wait_until(lambda: len(set(app.paths()) - before) >= 40 or indexer.poll() is not None, 300,
                       "40 documents of the run written")
            assert indexer.poll() is None, "the run ended before the kill"
            killed = time.monotonic()
            victim.kill()                 # one of the three URLs the app's client sends requests to
            searches.go_on(5)
            assert sum(a[3] > killed for a in searches.answers) >= 10
            # a replica is lost: still ready, and saying why
            state = ready(app)
            assert "yellow" in state["degraded"] and state["checks"] == {"model": True, "store": True}
            out, err = indexer.communicate(timeout=600)
        finally:
            if indexer.poll() is None:
                indexer.kill()
                indexer.communicate()
        victim.start()                    # back on its data
        healthy.wait_for("green")
        searches.go_on(1)
    finished = indexer.returncode == 0
    if not finished:                      # it stopped: the same command again completes it
        again = run_cli(app.env, *command)
        assert again.returncode == 0, again.stderr[-2000:]
    print(f"{searches.summary()}; the indexing run {'finished' if finished else 'stopped: ' + err[-300:]}")
    assert searches.failures() == []
    paths = app.paths()
    assert len(paths) == len(set(paths)) == len(before) + 160        # no duplicate, nothing lost
    assert set(paths) == before | {str(f.path) for f in scan([more])}
    assert "degraded" not in ready(app)


def test_kill_9_of_the_master_a_new_one_is_elected_and_writes_resume(app, healthy):
    old = healthy.master()
    count = len(app.paths())
    with Searches(app) as searches:
        killed = time.monotonic()
        old.kill()
        new = healthy.master(timeout=60)
        assert new is not old and new.running
        elected = time.monotonic() - killed
        searches.go_on(4)
        upload = requests.post(f"{app.url}/api/images", headers={"Authorization": f"Bearer {API_KEY}"},
                               files={"image": ("new.jpg", _jpeg(5000))}, params={"tags": "uploaded"}, timeout=60)
        assert upload.status_code == 201, upload.text
        found = requests.get(f"{app.url}/api/search", params={"q": "uploaded"}, timeout=30).json()
        assert [r["id"] for r in found["results"]] == [upload.json()["id"]]
        old.start()
        healthy.wait_for("green")
    print(f"new master after {elected:.1f} s; {searches.summary()}")
    assert searches.failures() == []
    removed = requests.delete(f"{app.url}/api/images/{upload.json()['id']}",
                              headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert removed.status_code == 200 and len(app.paths()) == count


def test_a_stalled_node_costs_at_most_one_timeout_and_is_used_again(app, healthy):
    victim = non_master(healthy)
    with Searches(app) as searches:
        paused = time.monotonic()
        victim.pause()                    # SIGSTOP: connections stay open, nothing answers
        searches.go_on(TIMEOUT + 4)       # longer than LOOKALIKE_ES_TIMEOUT
        victim.resume()
        resumed = time.monotonic()
        healthy.wait_for("green")
        during = [a for a in searches.answers if paused < a[3] and a[3] - a[2] < resumed]
        before = _requests_from_clients(healthy, victim)
        # the app's client had marked it dead; after its back-off (at most 30 s) it sends to it again
        wait_until(lambda: _requests_from_clients(healthy, victim) > before, 60, "requests to the resumed node")
    print(searches.summary())
    assert searches.failures() == []
    assert len(during) >= 5
    slowest = max(a[2] for a in during)
    assert slowest < 2 * TIMEOUT + 3, f"a search took {slowest:.1f} s while a node was stalled"


def test_rolling_restart_while_searching_and_indexing(app, healthy):
    more = generated_folder_at(app.root / "rolling", 240, start=20_000)
    before = set(app.paths())
    with Searches(app) as searches:
        indexer = start_cli(app.env, "index", str(more), "--tags-from-folders", "--batch-size", "4", "--json")
        try:
            # one node after the other, the master last (one election instead of up to three)
            master = healthy.master()
            for node in [n for n in healthy.nodes if n is not master] + [master]:
                node.stop()               # SIGTERM: a clean shutdown
                node.start()
                healthy.wait_for("green")
                indexing_during = indexer.poll() is None
            out, err = indexer.communicate(timeout=600)
        finally:
            if indexer.poll() is None:
                indexer.kill()
                indexer.communicate()
        searches.go_on(1)
    print(f"{searches.summary()}; the indexing run was still going at the last restart: {indexing_during}")
    assert searches.failures() == []
    assert indexer.returncode == 0, err[-2000:]
    assert summary_of(out)["indexed"] == 240 and summary_of(out)["failed"] == 0
    paths = app.paths()
    assert len(paths) == len(set(paths)) == len(before) + 240        # no duplicate, nothing lost
    assert set(paths) == before | {str(f.path) for f in scan([more])}


def test_two_then_three_sharded_indexers_at_once_write_every_file_once(app, healthy):
    root = app.root / "sharded"
    first = generated_folder_at(root / "first", 60, start=40_000)
    generated_folder_at(root / "second", 60, start=50_000)
    alias = new_alias("cluster-shards")
    env = {**app.env, "LOOKALIKE_ES_INDEX": alias}
    try:
        for folder, n in ((first, 2), (root, 3)):
            files = {str(f.path) for f in scan([folder])}
            known = {e.path for e in stored_entries(app.store_url, alias)} if n == 3 else set()
            # no tag option: the second round's runs skip the first round's files, unchanged
            runs = [start_cli(env, "index", str(folder), "--shard", f"{i}/{n}", "--json") for i in range(n)]
            outputs = [run.communicate(timeout=600) for run in runs]
            for run, (out, err) in zip(runs, outputs):
                assert run.returncode == 0, err[-2000:]
            indexed = [summary_of(out)["indexed"] for out, _ in outputs]
            shares = [{str(f.path) for f in scan([folder], shard=Shard(i, n))} - known for i in range(n)]
            assert indexed == [len(share) for share in shares]
            paths = [e.path for e in stored_entries(app.store_url, alias)]
            assert len(paths) == len(set(paths)) and set(paths) == files         # every file, once
    finally:
        delete_indices(app.cluster.master().url, alias)
