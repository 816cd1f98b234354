"""`lookalike backup` and `restore` on a real Elasticsearch (a snapshot repository under the test node's
path.repo): the promises of tests/test_backup.py, and a restore under running searches, which is safe (the
alias moves at once from the old documents to the restored ones)."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from elasticsearch import Elasticsearch, helpers

from backend.backup import backup, configured_descriptor, restore
from backend.config import Settings
from backend.stores import Document, document_id
from backend.stores.base import Label, NearLink
from backend.stores.backups import BackupError, Checksum
from backend.stores.elastic import VECTOR, ElasticStore
from backend.stores.embedded import EmbeddedStore
from tests.conftest import FAST_ENV, ROOT, delete_indices, picture
from tests.test_backup import backups_while_indexing, indexing, queries, searching, synthetic, thousand_pictures


@pytest.fixture
def es(elastic_nodes, tmp_path):
    """(url, a registered snapshot repository's name and folder, settings for an alias of this test's own)."""
    url = elastic_nodes.url("8")
    folder = elastic_nodes.repo("8")
    alias = f"bk-{uuid.uuid4().hex[:8]}"
    with Elasticsearch(url) as client:
        client.snapshot.create_repository(name=alias, repository={"type": "fs", "settings": {"location": str(folder)}})
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_STORE": url, "LOOKALIKE_ES_INDEX": alias,
                                  "LOOKALIKE_DATA_DIR": str(tmp_path / "data")})
    yield url, alias, folder, settings
    delete_indices(url, alias)
    with Elasticsearch(url) as client:
        client.snapshot.delete_repository(name=alias)


def env_for(settings: Settings, **more) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    return {**env, **FAST_ENV, "LOOKALIKE_STORE": settings.store, "LOOKALIKE_ES_INDEX": settings.es_index,
            "LOOKALIKE_DATA_DIR": str(settings.data_dir), **more}


def store_for(settings: Settings) -> ElasticStore:
    return ElasticStore.from_settings(settings)


def live_figures(settings: Settings) -> tuple[int, str, str]:
    """Count, checksum of ids and vectors, and physical index behind the alias, read from the cluster."""
    checksum = Checksum()
    with Elasticsearch(settings.store) as client:
        client.indices.refresh(index=settings.es_index)
        for hit in helpers.scan(client, index=settings.es_index, _source=False, fields=[VECTOR],
                                query={"query": {"match_all": {}}}):
            checksum.add_vector(hit["_id"], hit["fields"][VECTOR])
        index = next(iter(client.indices.get_alias(name=settings.es_index)))
    return checksum.count, checksum.hexdigest(), index


def written(settings: Settings, n: int, seed: int) -> str:
    """n synthetic documents written into the alias; their descriptor (the settings')."""
    descriptor = configured_descriptor(settings)
    with store_for(settings) as store:
        store.upsert(synthetic(n, seed, descriptor))
    return descriptor


def top10(settings: Settings, descriptor: str) -> list[list[str]]:
    with store_for(settings) as store:
        return [[h.document.id for h in store.knn(q, descriptor=descriptor, limit=10).hits] for q in queries()]


def test_restored_into_a_second_index_it_searches_exactly_like_the_original(es):
    url, alias, _, settings = es
    descriptor = written(settings, 400, 1)
    before = top10(settings, descriptor)
    summary = backup(settings, settings.data_dir.parent / "b", repository=alias)
    assert summary.count == 400 and summary.backend == "elasticsearch"

    second = settings.with_(es_index=f"{alias}-second")
    assert restore(second, settings.data_dir.parent / "b").checksum == summary.checksum
    assert live_figures(second)[:2] == (400, summary.checksum)
    assert top10(second, descriptor) == before
    with store_for(second) as store:
        assert store.keyword("p7").total >= 1 and store.descriptor() == descriptor

    with store_for(settings) as store:       # the live index moves on; a restore takes it back
        store.upsert(synthetic(50, 2, descriptor, start=1000))
        store.delete([d.id for d in synthetic(10, 1, descriptor)])
    with pytest.raises(BackupError, match="holds 440 documents: restore replaces them only with --force"):
        restore(settings, settings.data_dir.parent / "b")
    old_index = live_figures(settings)[2]
    restore(settings, settings.data_dir.parent / "b", force=True)
    count, checksum, index = live_figures(settings)
    assert (count, checksum) == (400, summary.checksum) and index != old_index
    assert top10(settings, descriptor) == before
    with Elasticsearch(url) as client:
        assert not client.indices.exists(index=old_index)   # replaced, and gone


def test_backup_while_an_indexer_writes_and_searches_run_is_one_consistent_state(es, tmp_path):
    url, alias, _, settings = es
    descriptor = configured_descriptor(settings)
    photos = thousand_pictures(tmp_path / "photos")

    def take(n: int) -> tuple[int, int]:
        return backup(settings, tmp_path / f"b{n}", repository=alias).count, live_figures(settings)[0]

    with store_for(settings) as store, searching(lambda: store.knn(queries()[0], descriptor=descriptor, limit=10)):
        # 50 a batch: each bulk write waits for a refresh (up to a second)
        taken = backups_while_indexing(indexing(photos, env_for(settings), 50), store.count, take,
                                       ((1, True), (300, False)))
    for n, count in enumerate(taken):
        target = settings.with_(es_index=f"{alias}-r{n}")
        assert restore(target, tmp_path / f"b{n}").count == count
        with Elasticsearch(url) as client:   # every document whole
            for hit in helpers.scan(client, index=target.es_index, fields=[VECTOR], query={"query": {"match_all": {}}}):
                src = hit["_source"]
                assert src["path"].startswith(str(photos)) and src["descriptor"] == descriptor, hit["_id"]
                assert src["content_hash"] and src["width"] == 48 and src["filename_words"], hit["_id"]
                assert abs(float(np.linalg.norm(hit["fields"][VECTOR])) - 1) < 1e-3, hit["_id"]


def test_a_killed_or_damaged_backup_is_refused_in_one_line_and_the_live_index_stays(es, tmp_path):
    url, alias, folder, settings = es
    written(settings, 300, 3)
    env = env_for(settings)

    # kill -9 once the snapshot is under way: no backup folder, and its parts are refused
    process = subprocess.Popen([sys.executable, "-m", "indexer", "backup", str(tmp_path / "k"), "--repository", alias],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(Path(folder).glob("indices/*/0/index-*")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (tmp_path / "k").exists()
    for part in [tmp_path / "k", *tmp_path.glob(".k.part-*")]:
        result = subprocess.run([sys.executable, "-m", "indexer", "restore", str(part), "--force"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr

    good = tmp_path / "good"
    backup(settings, good, repository=alias)
    live = live_figures(settings)
    cut_manifest = tmp_path / "cut"
    shutil.copytree(good, cut_manifest)
    text = (cut_manifest / "manifest.json").read_text()
    (cut_manifest / "manifest.json").write_text(text[:-40])
    elsewhere = tmp_path / "elsewhere"     # names a snapshot the repository does not hold
    shutil.copytree(good, elsewhere)
    manifest = json.loads((good / "manifest.json").read_text())
    (elsewhere / "manifest.json").write_text(json.dumps({**manifest, "index": {**manifest["index"],
                                                                                "snapshot": "nothing-here"}}))
    snapshot_files = [p for p in Path(folder).glob("indices/*/0/__*") if p.stat().st_size > 10_000]
    for blob in snapshot_files:   # the snapshot's data in the repository, truncated
        with open(blob, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
    expected = {cut_manifest: "is damaged: its manifest.json cannot be read",
                elsewhere: "names snapshot nothing-here, which repository",
                good: "is damaged: Elasticsearch restored 0 of 1 shards"}
    assert snapshot_files
    for source, words in expected.items():
        result = subprocess.run([sys.executable, "-m", "indexer", "restore", str(source), "--force"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and words in lines[0], result.stderr
    assert live_figures(settings) == live
    with Elasticsearch(url) as client:   # nothing left behind by the failed restores (the killed backup's
        # scratch index, if it was killed while checking its snapshot, is named as such)
        assert [i for i in client.indices.get(index=f"{alias}*") if "-check-" not in i] == [live[2]]


def test_a_restore_under_running_searches_is_safe(es):
    url, alias, _, settings = es
    descriptor = written(settings, 300, 4)
    backed_up = top10(settings, descriptor)
    backup(settings, settings.data_dir.parent / "b", repository=alias)
    written(settings, 300, 5)   # every vector replaced
    current = top10(settings, descriptor)
    assert current != backed_up
    with store_for(settings) as store, \
            searching(lambda: [h.document.id for h in store.knn(queries()[0], descriptor=descriptor,
                                                                limit=10).hits]) as answers:
        while len(answers) < 3:
            time.sleep(0.01)
        restore(settings, settings.data_dir.parent / "b", force=True)
        seen = len(answers)
        while len(answers) < seen + 3:
            time.sleep(0.01)
    assert all(a in (current[0], backed_up[0]) for a in answers)
    assert answers[0] == current[0] and answers[-1] == backed_up[0]


def with_everything(docs: list, signature: bytes) -> list:
    """The synthetic documents given what an index run gives them: near links, content labels (or none
    yet), photo metadata, a layout signature; one left unlinked (indexed before links were kept)."""
    for i, doc in enumerate(docs):
        doc.near = [NearLink(docs[i - 1].id, docs[i - 1].content_hash, 0.91 - i / 1000)] if i % 3 == 1 else []
        doc.labels = [Label("tabby", 0.8), Label("tiger cat", 0.15)] if i % 2 else None
        doc.taken, doc.camera_make, doc.camera_model = f"2021-05-{1 + i % 28:02d}T10:00:00", "Canon", f"EOS {i % 4}D"
        doc.file_type, doc.folder, doc.meta_version, doc.signature = "jpeg", doc.tags[0], 3, signature
    docs[5].near = None
    return docs


@pytest.mark.parametrize("major", ["8", "9"])
def test_an_embedded_backup_moves_into_elasticsearch_as_it_is(elastic_nodes, tmp_path, major):
    """Restore takes an embedded store's backup into Elasticsearch: every document as it was (vector, links,
    labels, metadata, what the indexer's next run compares), uploads moved to the new data folder, verified
    by count and checksum; no model runs. An Elasticsearch backup is refused by the embedded store."""
    embedded = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data")})
    descriptor = configured_descriptor(embedded)
    docs = with_everything(synthetic(300, 3, descriptor), bytes(range(256)) * 4)
    embedded.uploads_dir.mkdir(parents=True)
    upload = embedded.uploads_dir / "x.jpg"
    picture(4).save(upload)
    upload = upload.rename(upload.with_name(hashlib.sha256(upload.read_bytes()).hexdigest() + ".jpg"))
    docs.append(Document(document_id(str(upload)), synthetic(1, 9, descriptor)[0].vector, "mine.jpg", str(upload),
                         ["upload"], 96, 64, upload.stat().st_size, "e" * 64, descriptor, 2e9))
    with EmbeddedStore(embedded.embedded_path) as store:
        store.upsert(docs)
        ids = [doc.id for doc in docs]
        expected = (store.documents(ids), store.vectors(ids), sorted(store.entries(), key=lambda e: e.id),
                    sorted(store.near_pairs(0.6)), store.tag_counts(), store.keyword("p7").total)
    summary = backup(embedded, tmp_path / "b")

    alias = f"mv-{uuid.uuid4().hex[:8]}"
    target = Settings.from_env({**FAST_ENV, "LOOKALIKE_STORE": elastic_nodes.url(major), "LOOKALIKE_ES_INDEX": alias,
                                "LOOKALIKE_DATA_DIR": str(tmp_path / "es-data")})
    try:
        restored = restore(target, tmp_path / "b")
        assert (restored.backend, restored.count, restored.checksum, restored.uploads) == \
            ("embedded", 301, summary.checksum, 1)
        assert live_figures(target)[:2] == (301, summary.checksum)
        moved = str(target.uploads_dir.absolute() / upload.name)
        assert Path(moved).read_bytes() == upload.read_bytes()
        with store_for(target) as store:
            documents, vectors = store.documents(ids), store.vectors(ids)
            entries = sorted(store.entries(), key=lambda e: e.id)
            assert store.descriptor() == descriptor
            assert {i: d.metadata() for i, d in documents.items()} == \
                {i: {**d.metadata(), "path": moved if i == docs[-1].id else d.path} for i, d in expected[0].items()}
            assert all(documents[i].near == expected[0][i].near for i in ids)
            assert all(documents[i].signature == expected[0][i].signature for i in ids)
            assert all(np.array_equal(vectors[i], expected[1][i]) for i in ids)
            assert [e for e in entries if e.id != docs[-1].id] == [e for e in expected[2] if e.id != docs[-1].id]
            assert sorted(store.near_pairs(0.6)) == expected[3]
            assert store.tag_counts() == expected[4] and store.keyword("p7").total == expected[5]

            # a second move replaces what is there only with --force
            store.upsert(synthetic(5, 4, descriptor, start=5000))
        with pytest.raises(BackupError, match="holds 306 documents: restore replaces them only with --force"):
            restore(target, tmp_path / "b")
        assert restore(target, tmp_path / "b", force=True).count == 301
        assert live_figures(target)[:2] == (301, summary.checksum)
    finally:
        delete_indices(elastic_nodes.url(major), alias)

    if major == "8":   # the other way round: an Elasticsearch backup does not restore into the embedded store
        with Elasticsearch(elastic_nodes.url(major)) as client:
            client.snapshot.create_repository(name=alias, repository={
                "type": "fs", "settings": {"location": str(elastic_nodes.repo(major))}})
        try:
            written(target, 20, 1)
            backup(target, tmp_path / "es-b", repository=alias)
            with pytest.raises(BackupError, match="is of an elasticsearch store; LOOKALIKE_STORE names an embedded "
                                                  "one"):
                restore(embedded.with_(data_dir=tmp_path / "other"), tmp_path / "es-b")
            assert not (tmp_path / "other" / "index.sqlite3").exists()
        finally:
            delete_indices(elastic_nodes.url(major), alias)
            with Elasticsearch(elastic_nodes.url(major)) as client:
                client.snapshot.delete_repository(name=alias)
