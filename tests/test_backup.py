"""`lookalike backup` and `restore` on the embedded store: a restored index searches exactly like the
original; a backup taken while an indexer writes is one consistent state; a backup killed half-way, or
damaged later, is refused in one line and the live index is left as it was; a restore while a server has
the store open is refused. (tests/test_backup_elastic.py: the same promises on a real Elasticsearch.)"""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import requests

from backend.backup import backup, configured_descriptor, restore
from backend.config import Settings
from backend.stores import DescriptorMismatch, Document, document_id
from backend.stores.backups import BackupError, Checksum
from backend.stores.embedded import EmbeddedStore
from benchmarks.server import gunicorn
from tests.conftest import FAST_ENV, ROOT, picture

QUERIES = 50


def synthetic(n: int, seed: int, descriptor: str, start: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 512)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = []
    for i, vec in enumerate(vecs, start):
        path = f"/photos/{'cats' if i % 2 else 'dogs'}/p{i}.jpg"
        docs.append(Document(document_id(path), vec, f"p{i}.jpg", path, ["cats" if i % 2 else "dogs"], 96, 64,
                             1000 + i, f"{i:064x}", descriptor, 1.0e9 + i, 1.0e9))
    return docs


def top10(store, queries: np.ndarray, descriptor: str) -> list[list[str]]:
    return [[hit.document.id for hit in store.knn(q, descriptor=descriptor, limit=10).hits] for q in queries]


def queries(seed: int = 99) -> np.ndarray:
    return np.stack([d.vector for d in synthetic(QUERIES, seed, "-")])


def figures(path: Path) -> tuple[int, str]:
    """Count and checksum of the documents in the database at `path`, read with SQL alone."""
    checksum = Checksum()
    with closing(sqlite3.connect(path)) as db:
        for doc_id, vector in db.execute("SELECT id, vector FROM docs"):
            checksum.add(doc_id, vector)
    return checksum.count, checksum.hexdigest()


def assert_complete(path: Path) -> int:
    """Every document whole: its vector a unit vector, its words and tags indexed; returns the count."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT rowid, vector, tags, filename FROM docs").fetchall()
        fts = {r for (r,) in db.execute("SELECT rowid FROM docs_fts")}
        tagged = {r: n for r, n in db.execute("SELECT rowid, count(*) FROM doc_tags GROUP BY rowid")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for rowid, vector, tags, filename in rows:
        vec = np.frombuffer(vector, dtype="<f4")
        assert vec.shape == (512,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3, filename
        assert rowid in fts and tagged.get(rowid, 0) == len(json.loads(tags)), filename
    assert len(fts) == len(rows)
    return len(rows)


@pytest.fixture
def settings(fast_settings) -> Settings:
    return fast_settings


def other(settings: Settings, name: str) -> Settings:
    return settings.with_(data_dir=settings.data_dir.parent / name)


def filled(settings: Settings, n: int = 400, seed: int = 1) -> list[Document]:
    docs = synthetic(n, seed, configured_descriptor(settings))
    with EmbeddedStore(settings.embedded_path) as store:
        store.upsert(docs)
    return docs


def test_a_restored_index_searches_exactly_like_the_original(settings, tmp_path):
    descriptor = configured_descriptor(settings)
    filled(settings)
    settings.uploads_dir.mkdir(parents=True)
    upload = settings.uploads_dir / "ab.jpg"
    picture(3).save(upload)
    named = upload.with_name(hashlib.sha256(upload.read_bytes()).hexdigest() + ".jpg")
    upload.rename(named)
    with EmbeddedStore(settings.embedded_path) as store:
        store.upsert([Document(document_id(str(named)), synthetic(1, 5, descriptor)[0].vector, "mine.jpg",
                               str(named), ["upload"], 96, 64, named.stat().st_size, "f" * 64, descriptor, 2e9)])
        store.warm_up()
        before = top10(store, queries(), descriptor)
        count = store.count()
        summary = backup(settings, tmp_path / "b")   # while this process has the store open
    assert (summary.count, summary.uploads) == (count, 1)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["descriptor"] == descriptor and manifest["count"] == count
    assert not (tmp_path / "b" / "index.sqlite3.vectors").exists()   # a cache, rebuilt

    elsewhere = other(settings, "restored")
    restored = restore(elsewhere, tmp_path / "b")
    assert (restored.count, restored.checksum) == (count, summary.checksum)
    assert figures(elsewhere.embedded_path) == (count, summary.checksum)
    with EmbeddedStore(elsewhere.embedded_path) as store:
        assert top10(store, queries(), descriptor) == before
        assert store.count() == count
        moved = store.get(document_id(str(named)))   # the upload now lives in the new data folder
        assert moved is not None and moved.path == str(elsewhere.uploads_dir.absolute() / named.name)
        assert Path(moved.path).read_bytes() == named.read_bytes()
        assert store.keyword("mine").total == 1


def test_restore_refuses_a_store_with_documents_without_force_and_another_descriptor(settings, tmp_path):
    filled(settings, 50, 1)
    summary = backup(settings, tmp_path / "b")
    with EmbeddedStore(settings.embedded_path) as store:
        store.upsert(synthetic(30, 2, configured_descriptor(settings), start=1000))
    with pytest.raises(BackupError, match="holds 80 documents: restore replaces them only with --force"):
        restore(settings, tmp_path / "b")
    assert figures(settings.embedded_path)[0] == 80
    assert restore(settings, tmp_path / "b", force=True).count == 50
    assert figures(settings.embedded_path) == (50, summary.checksum)

    bigger = other(settings, "big").with_(image_size=96)
    with pytest.raises(DescriptorMismatch, match="holds vgg16-random-conv5-gem1.5-ar64-512d vectors; the settings "
                                                 "make vgg16-random-conv5-gem1.5-ar96-512d"):
        restore(bigger, tmp_path / "b")
    assert not bigger.embedded_path.exists()
    with pytest.raises(BackupError, match="already exists: back up into a new folder"):
        backup(settings, tmp_path / "b")


def run(args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_a_damaged_backup_is_refused_in_one_line_and_the_live_index_stays(settings, fast_env, tmp_path):
    filled(settings, 300, 1)
    good = tmp_path / "good"
    backup(settings, good)
    live = figures(settings.embedded_path)
    live_bytes = settings.embedded_path.read_bytes()

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    with open(truncated / "index.sqlite3", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    with open(flipped / "index.sqlite3", "r+b") as f:   # one byte in a page of vectors, same size
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    cut_manifest = tmp_path / "cut-manifest"
    shutil.copytree(good, cut_manifest)
    text = (cut_manifest / "manifest.json").read_text()
    (cut_manifest / "manifest.json").write_text(text[:len(text) // 2])
    no_manifest = tmp_path / "no-manifest"
    shutil.copytree(good, no_manifest)
    (no_manifest / "manifest.json").unlink()

    expected = {truncated: "is damaged: index.sqlite3 is not the file its manifest describes",
                flipped: "is damaged: index.sqlite3 is not the file its manifest describes",
                cut_manifest: "is damaged: its manifest.json cannot be read",
                no_manifest: "is not a complete backup: it has no manifest.json",
                tmp_path / "nothing": "no backup at"}
    for folder, words in expected.items():
        result = run(["restore", str(folder), "--force"], fast_env)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert figures(settings.embedded_path) == live
    assert settings.embedded_path.read_bytes() == live_bytes

    # A copy whose manifest was rewritten to match a damaged database is still caught by the checksum.
    forged = tmp_path / "forged"
    shutil.copytree(flipped, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["index"]["sha256"] = hashlib.sha256((forged / "index.sqlite3").read_bytes()).hexdigest()
    (forged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="is damaged"):
        restore(settings, forged, force=True)
    assert figures(settings.embedded_path) == live


def test_a_backup_killed_half_way_leaves_nothing_restore_accepts(settings, fast_env, tmp_path):
    filled(settings, 20_000, 4)
    dest = tmp_path / "b"
    process = subprocess.Popen([sys.executable, "-m", "indexer", "backup", str(dest)], env=fast_env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".b.part-*/index.sqlite3")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not dest.exists()
    for folder in [dest, *tmp_path.glob(".b.part-*")]:
        result = run(["restore", str(folder)], {**fast_env, "LOOKALIKE_DATA_DIR": str(tmp_path / "restored")})
        assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
    assert not (tmp_path / "restored" / "index.sqlite3").exists()


def thousand_pictures(folder: Path) -> Path:
    """1,000 picture files, copies of 40 pictures: the indexer runs the model on 40 and reuses their vectors
    for the rest (as it does for copies), so the writes, not the model, take the time."""
    folder.mkdir()
    pictures = [picture(i, size=(48, 32)) for i in range(40)]
    for i in range(1000):
        pictures[i % 40].save(folder / f"p{i:04}.png")
    return folder


@contextmanager
def searching(search: Callable[[], object]) -> Iterator[list]:
    """`search` called over and over in a thread while the block runs, as a server's worker would; yields
    its answers so far. Any search that fails fails the test."""
    answers: list = []
    failures: list[Exception] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                answers.append(search())
            except Exception as exc:  # noqa: BLE001 -- any failure of a search fails the test
                failures.append(exc)
            time.sleep(0.01)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[0]
    assert answers


def backups_while_indexing(indexer: subprocess.Popen, count: Callable[[], int],
                           take: Callable[[int], tuple[int, int]], rounds) -> list[int]:
    """For each (at_least, pause) round: once the indexer has written at_least documents, backup number n
    (take(n) -> its count, and the count right after it). With pause, the indexer is stopped wherever it was
    (perhaps inside a transaction, its rows written but not committed) while the backup runs. Each backup
    holds at least what was committed when it began and at most what was committed when it ended; returns
    their counts."""
    taken = []
    try:
        for n, (at_least, pause) in enumerate(rounds):
            while count() < at_least:
                assert indexer.poll() is None, indexer.stderr.read() if indexer.stderr else ""
                time.sleep(0.01)
            if pause:
                indexer.send_signal(signal.SIGSTOP)
            before = count()
            backed_up, after = take(n)
            assert before <= backed_up <= after
            taken.append(backed_up)
            if pause:
                assert before < 1000, "the indexer had finished: nothing was shown"
                indexer.send_signal(signal.SIGCONT)
        assert indexer.wait(timeout=600) == 0, indexer.stderr.read() if indexer.stderr else ""
    finally:
        if indexer.poll() is None:
            indexer.send_signal(signal.SIGCONT)
            indexer.kill()
    return taken


def indexing(photos: Path, env: dict, batch_size: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "indexer", "index", str(photos), "--batch-size", str(batch_size)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_backup_while_an_indexer_writes_and_searches_run_is_one_consistent_state(settings, fast_env, tmp_path):
    photos = thousand_pictures(tmp_path / "photos")
    descriptor = configured_descriptor(settings)
    EmbeddedStore(settings.embedded_path).close()

    def take(n: int) -> tuple[int, int]:
        return backup(settings, tmp_path / f"b{n}").count, store.count()

    with EmbeddedStore(settings.embedded_path) as store, \
            searching(lambda: store.knn(queries()[0], descriptor=descriptor, limit=10)):
        taken = backups_while_indexing(indexing(photos, fast_env, 8), store.count, take,
                                       ((8, True), (200, True), (300, False)))
    for n, count in enumerate(taken):
        target = other(settings, f"restored{n}")
        assert restore(target, tmp_path / f"b{n}").count == count
        assert assert_complete(target.embedded_path) == count
        with EmbeddedStore(target.embedded_path) as restored:
            assert restored.knn(queries()[0], descriptor=descriptor, limit=10).total == count


def test_restore_is_refused_while_a_server_has_the_store_open(settings, fast_env, tmp_path):
    filled(settings, 100, 7)
    with gunicorn(fast_env, tmp_path / "server.log", workers=1, threads=2) as server:
        summary = backup(settings, tmp_path / "b")            # online: the server keeps answering
        assert requests.get(server.url + "/api/stats", timeout=30).json()["count"] == 100
        result = run(["restore", str(tmp_path / "b"), "--force"], fast_env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (f"error: the store {settings.embedded_path} is open in another process "
                                         "(a server or an indexer): stop it, then restore")
        assert requests.get(server.url + "/api/stats", timeout=30).json()["count"] == 100
    result = run(["restore", str(tmp_path / "b"), "--force", "--json"], fast_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["checksum"] == summary.checksum
    assert "verified" in result.stderr


def test_the_command_line_backs_up_with_a_json_summary_and_names_what_is_wrong(settings, fast_env, tmp_path):
    filled(settings, 20, 8)
    result = run(["backup", str(tmp_path / "b"), "--json"], fast_env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["count"] == 20 and body["backend"] == "embedded" and len(body["checksum"]) == 64
    for args, words in ((["backup", str(tmp_path / "b")], "already exists"),
                        (["backup", str(tmp_path / "c"), "--repository", "r"], "--repository is for an Elasticsearch")):
        result = run(args, fast_env)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert words in result.stderr
    empty = {**fast_env, "LOOKALIKE_DATA_DIR": str(tmp_path / "empty")}
    result = run(["backup", str(tmp_path / "d")], empty)
    assert result.returncode == 1 and "nothing to back up" in result.stderr and not (tmp_path / "d").exists()
    assert not list(tmp_path.glob(".d.part-*"))
    EmbeddedStore(Path(empty["LOOKALIKE_DATA_DIR"]) / "index.sqlite3").close()   # a store, with no documents
    result = run(["backup", str(tmp_path / "d")], empty)
    assert result.returncode == 1 and result.stderr == "error: the store holds no documents: nothing to back up\n"
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.part-*"))


def test_fast_env_is_what_the_fixtures_use():
    # the descriptor restore compares with is the one the fast settings give the indexer's vectors
    assert configured_descriptor(Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": "/nowhere"})) == \
        "vgg16-random-conv5-gem1.5-ar64-512d"
