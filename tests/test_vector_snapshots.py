"""The embedded store's shared vector snapshot (backend/stores/matrix.py): every search process maps one
file, follows later changes privately, and falls back to the database whenever the file is missing,
damaged, from another history, or cannot be written. Each test checks results against brute force."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pytest

from backend.stores.base import Document
from backend.stores.embedded import EmbeddedStore, snapshot_folder

ROOT = Path(__file__).resolve().parent.parent
DESC = "synthetic-32d"
DIMS = 32
MIN_ROWS = 50   # a new snapshot after more than 50 changed rows (and an eighth of the snapshot)


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def docs(start: int, vecs: np.ndarray, descriptor: str = DESC) -> list[Document]:
    return [Document(id=f"d{start + i:05d}", vector=v, filename=f"{start + i}.jpg", path=f"/p/{start + i}.jpg",
                     tags=["even" if (start + i) % 2 == 0 else "odd"], width=1, height=1, bytes=1,
                     content_hash=f"h{start + i}", descriptor=descriptor, indexed_at=0.0)
            for i, v in enumerate(vecs)]


def open_store(path: Path) -> EmbeddedStore:
    return EmbeddedStore(path / "index.sqlite3", snapshot_min_rows=MIN_ROWS)


def folder(path: Path) -> Path:
    return snapshot_folder(path / "index.sqlite3")


def settle(store: EmbeddedStore) -> None:
    """Wait for a snapshot being written in the background, then search as a worker would next."""
    if store._shared.writer is not None:
        store._shared.writer.join(timeout=60)
    store.warm_up()


def snapshot_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in folder(path).iterdir() if p.is_dir())


def expected(current: dict[str, np.ndarray], query: np.ndarray, k: int, tag: str | None = None) -> list[str]:
    ids = [i for i in current if tag is None or (int(i[1:]) % 2 == 0) == (tag == "even")]
    scores = np.array([current[i] @ query for i in ids])
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def check(store: EmbeddedStore, current: dict[str, np.ndarray], seed: int) -> None:
    for q in vectors(5, seed):
        assert [h.document.id for h in store.knn(q, descriptor=DESC, limit=10).hits] == expected(current, q, 10)
        tagged = store.knn(q, descriptor=DESC, limit=10, tags=["even"])
        assert [h.document.id for h in tagged.hits] == expected(current, q, 10, "even")
        assert tagged.total == len(expected(current, q, len(current), "even"))


def test_workers_share_one_mapped_file_and_follow_changes(tmp_path):
    first = vectors(400, 1)
    current = {d.id: d.vector for d in docs(0, first)}
    writer = open_store(tmp_path)
    writer.upsert(docs(0, first))

    a, b = open_store(tmp_path), open_store(tmp_path)
    a.warm_up()
    b.warm_up()
    (token,) = snapshot_dirs(tmp_path)          # the first worker wrote it, the second mapped it
    for store in (a, b):
        assert isinstance(store._shared.vectors.base, np.memmap)
        assert Path(store._shared.vectors.base.filename) == folder(tmp_path) / token / "vectors.npy"
        assert store._shared.vectors.changes == 0
    check(a, current, 10)

    # A few changes stay private to each reader: no new file.
    few = vectors(20, 2)
    writer.upsert(docs(390, few))               # 10 replaced, 10 new
    writer.delete(["d00000", "d00001"])
    current.update({d.id: d.vector for d in docs(390, few)})
    del current["d00000"], current["d00001"]
    check(a, current, 11)
    # 20 private rows, and 12 dead ones in the file (10 replaced, 2 removed)
    assert a._shared.vectors.changes == 32 and snapshot_dirs(tmp_path) == [token]

    # Many: the next search starts writing a new snapshot beside the searches and it replaces the old
    # one; b still maps the old file (deleted, but readable while mapped) until its next search.
    many = vectors(200, 3)
    writer.upsert(docs(1000, many))
    current.update({d.id: d.vector for d in docs(1000, many)})
    check(a, current, 12)
    settle(a)
    (newer,) = snapshot_dirs(tmp_path)
    assert newer != token and a._shared.vectors.snapshot == newer and a._shared.vectors.changes == 0
    assert b._shared.vectors.snapshot == token
    check(b, current, 13)
    assert b._shared.vectors.snapshot == newer
    for store in (a, b, writer):
        store.close()


CHILD = """
import sys
import numpy as np
from backend.stores.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1], snapshot_min_rows=50)
hit = store.knn(np.eye(32, dtype=np.float32)[0], descriptor="synthetic-32d", limit=1).hits[0]
maps = open("/proc/self/maps").read()
print(hit.document.id, sum("vectors.npy" in line for line in maps.splitlines()) > 0)
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the mappings")
def test_another_process_maps_the_same_file(tmp_path):
    store = open_store(tmp_path)
    vecs = vectors(300, 4)
    store.upsert(docs(0, vecs))
    store.warm_up()
    best = f"d{int(np.argmax(vecs[:, 0])):05d}"
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "index.sqlite3")],
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == [best, "True"]
    assert len(snapshot_dirs(tmp_path)) == 1    # the child mapped the file; it did not write its own
    store.close()


def test_damaged_or_missing_snapshot_falls_back_to_the_database(tmp_path, caplog):
    vecs = vectors(300, 5)
    current = {d.id: d.vector for d in docs(0, vecs)}
    with open_store(tmp_path) as store:
        store.upsert(docs(0, vecs))
        store.warm_up()
    (token,) = snapshot_dirs(tmp_path)
    path = folder(tmp_path) / token / "vectors.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])   # cut short, as by a full disk
    with caplog.at_level(logging.WARNING), open_store(tmp_path) as store:
        check(store, current, 20)
        assert "damaged" in caplog.text
        assert snapshot_dirs(tmp_path) != [token]                      # and it wrote a good one
    shutil.rmtree(folder(tmp_path))
    with open_store(tmp_path) as store:
        check(store, current, 21)
        assert len(snapshot_dirs(tmp_path)) == 1


def held_files(path: Path) -> list[str]:
    """What this process still has open or mapped under `path`: file descriptors and memory maps."""
    fds = [os.readlink(f) for f in Path("/proc/self/fd").iterdir() if f.exists()]
    maps = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if len(line.split()) > 5]
    return sorted({f for f in fds + maps if f.startswith(str(path))})


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc to see open files and maps")
def test_a_closed_store_holds_no_connection_thread_or_map(tmp_path):
    # A snapshot writer is waiting for the snapshot lock (as when another process writes one) with its own
    # connection open when the store is closed: close() must give it up and wait for it, and let go of the
    # mapped snapshot, so that the files can be replaced (a restore) or removed at once.
    store = open_store(tmp_path)
    store.upsert(docs(0, vectors(300, 6)))
    store.warm_up()
    assert isinstance(store._shared.vectors.base, np.memmap)
    store.upsert(docs(0, vectors(300, 7)))
    with store._shared.snapshots.lock() as locked:
        assert locked
        store.warm_up()                      # many changes: a writer starts and waits for the lock
        writer = store._shared.writer
        assert writer is not None and writer.is_alive()
        store.close()
    assert not writer.is_alive()
    assert held_files(tmp_path) == []
    assert [t.name for t in threading.enumerate() if t.name == "vector-snapshot"] == []


def test_a_snapshot_of_another_history_is_never_used(tmp_path):
    # A backup of the database, then more writes (and a newer snapshot), then the backup restored:
    # the restored database must not take vectors from the newer snapshot.
    before = vectors(300, 6)
    store = open_store(tmp_path)
    store.upsert(docs(0, before))
    store.warm_up()
    backup = tmp_path / "backup.sqlite3"
    with closing(sqlite3.connect(backup)) as copy:   # (sqlite3's own `with` commits, it does not close)
        store._db.backup(copy)
    store.upsert(docs(0, vectors(300, 7)))      # every vector replaced
    store.warm_up()
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(tmp_path / "index.sqlite3") + suffix).unlink(missing_ok=True)
    shutil.copy(backup, tmp_path / "index.sqlite3")
    with open_store(tmp_path) as restored:
        check(restored, {d.id: d.vector for d in docs(0, before)}, 30)

    # A new database beside an old snapshot folder: the folder is not its own.
    (tmp_path / "index.sqlite3").unlink()
    fresh = vectors(100, 8)
    with open_store(tmp_path) as store:
        store.upsert(docs(0, fresh))
        check(store, {d.id: d.vector for d in docs(0, fresh)}, 31)


def test_unwritable_snapshot_folder_warns_once_and_searches_go_on(tmp_path, caplog):
    folder(tmp_path).write_text("not a folder")   # so no snapshot can be written (tests run as root)
    vecs = vectors(300, 9)
    current = {d.id: d.vector for d in docs(0, vecs)}
    with caplog.at_level(logging.WARNING), open_store(tmp_path) as store:
        store.upsert(docs(0, vecs))
        check(store, current, 40)
        more = vectors(100, 10)
        store.upsert(docs(300, more))
        current.update({d.id: d.vector for d in docs(300, more)})
        check(store, current, 41)
        assert not isinstance(store._shared.vectors.base, np.memmap)
    assert caplog.text.count("cannot write vector snapshots") == 1


def test_emptied_and_refilled_with_another_descriptor(tmp_path):
    store = open_store(tmp_path)
    store.upsert(docs(0, vectors(300, 11)))
    store.warm_up()
    store.delete([f"d{i:05d}" for i in range(300)])
    assert store.knn(vectors(1, 12)[0], descriptor=DESC, limit=5).total == 0
    other = np.random.default_rng(13).standard_normal((80, 8)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)     # stores keep unit vectors only
    store.upsert(docs(0, other, descriptor="other-8d"))
    hits = store.knn(other[3], descriptor="other-8d", limit=80)
    assert hits.total == 80 and hits.hits[0].document.id == "d00003"
    store.close()


def test_the_snapshot_name_read_from_the_database_is_a_folder_name_only():
    from backend.stores.matrix import decode_meta, encode_meta
    token = "0123456789abcdef0123456789abcdef"
    assert decode_meta(encode_meta(token, 7)) == (token, 7)
    for bad in (encode_meta("../../etc", 7), encode_meta(token.upper(), 7), '{"token": "%s"}' % token, "[1]",
                "not json", None, ""):
        assert decode_meta(bad) is None


def test_a_full_disk_warns_and_searches_go_on(tmp_path, caplog):
    """The snapshot folder on a 64 KiB disk, for 1,000 x 32 floats (125 KiB): no room. (A store into a
    writable memory map would have killed the process with SIGBUS.)"""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("needs root and mount(8) to make a small tmpfs stand for a full disk")
    try:
        folder(tmp_path).symlink_to(tiny)
        vecs = vectors(1000, 14)
        current = {d.id: d.vector for d in docs(0, vecs)}
        with caplog.at_level(logging.WARNING), open_store(tmp_path) as store:
            store.upsert(docs(0, vecs))
            check(store, current, 50)
            assert store.vector_snapshot is None
        assert "No space left on device" in caplog.text
        assert [p.name for p in tiny.iterdir()] == ["lock"]     # the part written is gone
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


def test_searches_go_on_while_a_new_snapshot_waits_to_be_written(tmp_path):
    """Another process holds the snapshot lock (as while it writes one): a search that calls for a new
    snapshot answers at once, right, from the old one and its own rows; the new one follows."""
    import fcntl
    import time
    first = vectors(400, 15)
    current = {d.id: d.vector for d in docs(0, first)}
    store = open_store(tmp_path)
    store.upsert(docs(0, first))
    store.warm_up()
    (token,) = snapshot_dirs(tmp_path)
    with open(folder(tmp_path) / "lock", "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        more = vectors(300, 16)
        store.upsert(docs(400, more))
        current.update({d.id: d.vector for d in docs(400, more)})
        started = time.monotonic()
        check(store, current, 60)
        assert time.monotonic() - started < 5
        assert store._shared.writer.is_alive() and snapshot_dirs(tmp_path) == [token]   # waiting for the lock
    settle(store)
    (newer,) = snapshot_dirs(tmp_path)
    assert newer != token and store.vector_snapshot == newer and store._shared.vectors.changes == 0
    check(store, current, 61)
    store.close()


def test_a_backup_restored_under_a_running_process(tmp_path):
    """The database goes back to an earlier state while a search process runs: it starts again."""
    before = vectors(300, 17)
    store = open_store(tmp_path)
    store.upsert(docs(0, before))
    store.warm_up()
    with closing(sqlite3.connect(tmp_path / "backup.sqlite3")) as backup:
        store._db.backup(backup)
        store.upsert(docs(0, vectors(300, 18)) + docs(300, vectors(100, 19)))
        reader = open_store(tmp_path)
        reader.warm_up()
        with closing(sqlite3.connect(tmp_path / "index.sqlite3")) as live:
            backup.backup(live)    # restored through SQLite, live
    check(reader, {d.id: d.vector for d in docs(0, before)}, 70)
    for s in (store, reader):
        s.close()


# -- SharedVectors on its own: one way in, current() -------------------------------------------------

@contextmanager
def following(path: Path, rows: int = 0, seed: int = 0, min_rows: int | None = MIN_ROWS):
    """(a SharedVectors on a connection of its own, as a search process holds one over the store's SQL;
    a writer store that first writes `rows` rows)."""
    import threading

    from backend.stores.embedded import VectorRows
    from backend.stores.matrix import SharedVectors

    writer = open_store(path)                    # the schema, and what it writes
    if rows:
        writer.upsert(docs(0, vectors(rows, seed)))
    db_path = path / "index.sqlite3"
    db = sqlite3.connect(db_path, timeout=60, isolation_level=None, check_same_thread=False)
    lock = threading.RLock()
    try:
        yield SharedVectors(VectorRows(db, lock, db_path), snapshot_folder(db_path), min_rows, lock), writer
    finally:
        writer.close()
        db.close()


def held(view) -> dict[int, np.ndarray]:
    """{rowid: vector} of the current rows of a Vectors view."""
    matrix = np.concatenate([np.asarray(view.base).reshape(-1, DIMS), view.extra.reshape(-1, DIMS)])
    return {int(r): matrix[i] for i, r in enumerate(view.rowids) if view.live[i]}


def stored(path: Path) -> dict[int, np.ndarray]:
    with sqlite3.connect(path / "index.sqlite3") as db:
        return {r: np.frombuffer(v, dtype="<f4") for r, v in db.execute("SELECT rowid, vector FROM docs")}


def assert_same(view, path: Path) -> None:
    got, want = held(view), stored(path)
    assert got.keys() == want.keys()
    for rowid, vector in want.items():
        np.testing.assert_array_equal(got[rowid], vector)


def test_current_is_the_database_now_and_costs_nothing_when_nothing_changed(tmp_path):
    with following(tmp_path) as (shared, writer):
        empty = shared.current()
        assert len(empty) == 0 and shared.current() is empty
        writer.upsert(docs(0, vectors(30, 30)))
        few = shared.current()
        assert few is not empty and few.snapshot is None and few.changes == 30   # under MIN_ROWS: private rows
        assert_same(few, tmp_path)
        assert shared.current() is few                                         # nothing committed since
        writer.upsert(docs(0, vectors(10, 31)))
        writer.delete(["d00029"])
        moved = shared.current()
        assert moved is not few and moved.seq > few.seq
        assert_same(moved, tmp_path)


def test_current_writes_and_maps_a_snapshot_once_the_changes_are_many(tmp_path):
    with following(tmp_path, rows=300, seed=32) as (shared, writer):
        first = shared.current()           # the first load writes the snapshot itself: nothing is served yet
        (token,) = snapshot_dirs(tmp_path)
        assert first.snapshot == token and isinstance(first.base, np.memmap) and first.changes == 0
        writer.upsert(docs(300, vectors(200, 33)))
        later = shared.current()           # answers at once from its own rows; the new snapshot follows
        assert_same(later, tmp_path)
        shared.writer.join(timeout=60)
        settled = shared.current()
        assert settled.snapshot != token and settled.changes == 0
        assert snapshot_dirs(tmp_path) == [settled.snapshot]
        assert_same(settled, tmp_path)


def test_no_snapshots_keeps_every_vector_in_the_process(tmp_path):
    with following(tmp_path, rows=300, seed=34, min_rows=None) as (shared, _):
        view = shared.current()
        assert view.snapshot is None and not isinstance(view.base, np.memmap) and shared.writer is None
        assert_same(view, tmp_path)
        assert not folder(tmp_path).exists() or snapshot_dirs(tmp_path) == []


WRITERS = """
import sys
from tests.test_vector_snapshots import docs, vectors, open_store
from pathlib import Path
first = int(sys.argv[2])
store = open_store(Path(sys.argv[1]))
for batch in range(12):
    store.upsert(docs(first + batch * 25, vectors(25, first + batch)))
    if batch % 3 == 2:
        store.delete([f"d{first + batch * 25 - i:05d}" for i in range(1, 6)])
    store.warm_up()            # follows, and writes snapshots of its own now and then
store.close()
"""


def test_current_follows_concurrent_writers_in_other_processes(tmp_path):
    """Two processes write, delete and write snapshots of their own while this one follows them: at every
    step current() is a consistent view, and once they are done it is exactly what the database holds."""
    import time

    with following(tmp_path) as (shared, _):
        writers = [subprocess.Popen([sys.executable, "-c", WRITERS, str(tmp_path), str(start)], cwd=ROOT)
                   for start in (0, 10_000)]    # from the checkout: `python -c` then finds the tests package
        views = 0
        while any(w.poll() is None for w in writers):
            view = shared.current()
            assert len(held(view)) == int(view.live.sum())     # each current row once
            views += 1
            time.sleep(0.01)
        assert [w.wait(timeout=120) for w in writers] == [0, 0] and views
        final = shared.current()
        while shared.writer is not None and shared.writer.is_alive():   # a snapshot it started: let it land
            shared.writer.join(timeout=60)
            final = shared.current()
        assert_same(final, tmp_path)
        assert len(stored(tmp_path)) == 2 * (12 * 25 - 4 * 5)
        assert final.snapshot is not None   # the rows came to many: it maps a snapshot (its own or a writer's)
