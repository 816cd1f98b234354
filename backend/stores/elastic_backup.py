"""The Elasticsearch store's backup: a snapshot of the live physical index into a repository the user has
registered (a shared file system, S3, ...), taken while searches and writes go on (a snapshot is a
point-in-time copy of each shard). The snapshot is restored once into a scratch index to read its count and
checksum, so the manifest describes what the snapshot really holds, and the backup is known to restore.

A restore fills a new physical index from the snapshot, verifies it, and only then moves the alias to it
in one atomic call (as a rebuild's promote does): a server searching meanwhile sees the old documents, then
the restored ones, never neither. The replaced index is deleted.

An embedded store's backup restores here too (moving a collection to Elasticsearch without running the
model again): its documents are written into a new index as they are, verified the same way, and made
live the same way."""
from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from elasticsearch import NotFoundError, helpers

from .backups import Bar, BackupError, Checksum, IndexCopy, verify
from .base import ELASTICSEARCH, Document
from .elastic import VECTOR, ElasticStore, swap_actions

POLL_SECONDS = 0.5


class ElasticCopy(IndexCopy):
    backend = ELASTICSEARCH

    def __init__(self, settings):
        self.store = ElasticStore.from_settings(settings)
        self.client = self.store._client.options(request_timeout=max(settings.es_timeout, 600.0))

    def close(self) -> None:
        self.store.close()

    # -- backup ------------------------------------------------------------------------------------

    def copy(self, folder: Path, bar: Bar, repository: str | None) -> dict:
        if not repository:
            raise BackupError("an Elasticsearch store is backed up into a snapshot repository: name one with "
                              "--repository NAME (docs/elasticsearch.md, 'Backups')")
        live = self.store._target(fresh=True)
        if live is None:
            raise BackupError(f"{self.store.location()} holds no index yet: nothing to back up")
        index, descriptor = live
        self._repository(repository)
        name = f"{self.store.alias}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        with self.store._call(f"snapshot {index} into repository {repository}"):
            self.client.snapshot.create(repository=repository, snapshot=name, indices=index,
                                        include_global_state=False, wait_for_completion=False,
                                        metadata={"product": "lookalike", "descriptor": descriptor})
        info = self._wait_for_snapshot(repository, name, bar)
        scratch = f"{index}-check-{uuid.uuid4().hex[:8]}"
        try:
            self._restore_into(repository, name, index, scratch, folder)
            figures = self._figures(scratch, bar)
        finally:
            self._delete(scratch)
        return {**figures, "descriptor": descriptor,
                "index": {"repository": repository, "snapshot": name, "uuid": info.get("uuid"), "index": index}}

    def _repository(self, repository: str) -> None:
        with self.store._call(f"read snapshot repository {repository}"):
            try:
                self.client.snapshot.get_repository(name=repository)
            except NotFoundError:
                raise BackupError(f"no snapshot repository {repository!r} on {self.store.url}: register one first "
                                  "(docs/elasticsearch.md, 'Backups')") from None

    def _snapshot(self, repository: str, name: str) -> dict | None:
        with self.store._call(f"read snapshot {name}"):
            try:
                found = self.client.snapshot.get(repository=repository, snapshot=name)["snapshots"]
            except NotFoundError:
                return None
        return found[0] if found else None

    def _wait_for_snapshot(self, repository: str, name: str, bar: Bar) -> dict:
        with bar("snapshot", 100, "%") as update:
            shown = 0
            while True:
                info = self._snapshot(repository, name)
                state = (info or {}).get("state")
                if state == "SUCCESS":
                    update(100 - shown)
                    return info or {}
                if state not in ("IN_PROGRESS", "STARTED", "INIT", None):
                    reason = (info or {}).get("reason") or state
                    raise BackupError(f"Elasticsearch could not snapshot {self.store.alias}: {reason}")
                with self.store._call(f"read the progress of snapshot {name}"):
                    status = self.client.snapshot.status(repository=repository, snapshot=name)["snapshots"]
                stats = status[0].get("stats", {}) if status else {}
                total = stats.get("total", {}).get("size_in_bytes") or 0
                done = int(100 * (stats.get("processed", {}).get("size_in_bytes") or 0) / total) if total else 0
                if done > shown:
                    update(min(done, 99) - shown)
                    shown = min(done, 99)
                time.sleep(POLL_SECONDS)

    def _restore_into(self, repository: str, snapshot: str, index: str, target: str, folder: Path) -> None:
        """Restore `index` of the snapshot as `target`, without its aliases; BackupError when a shard fails."""
        try:
            with self.store._call(f"restore snapshot {snapshot}"):
                result = self.client.snapshot.restore(
                    repository=repository, snapshot=snapshot, indices=index, include_aliases=False,
                    include_global_state=False, rename_pattern=re.escape(index), rename_replacement=target,
                    wait_for_completion=True)
        except BackupError:
            raise
        except Exception as exc:  # noqa: BLE001 -- the store's errors, or the client's, say why in one line
            raise BackupError(f"backup {folder} is damaged: Elasticsearch could not restore snapshot {snapshot} "
                              f"({exc})") from None
        shards = (result.body.get("snapshot") or {}).get("shards") or {}
        if shards.get("failed") or not shards.get("successful"):
            raise BackupError(f"backup {folder} is damaged: Elasticsearch restored {shards.get('successful', 0)} "
                              f"of {shards.get('total', '?')} shards of snapshot {snapshot}")

    def _figures(self, index: str, bar: Bar) -> dict:
        checksum = Checksum()
        with self.store._call(f"count {index}"):
            total = int(self.client.count(index=index)["count"])
        with self.store._call(f"read the vectors of {index}"), bar("checksum", total, "doc") as update:
            for hit in helpers.scan(self.client, index=index, query={"query": {"match_all": {}}}, _source=False,
                                    fields=[VECTOR], size=1000, scroll="5m"):
                checksum.add_vector(hit["_id"], (hit.get("fields") or {}).get(VECTOR) or [])
                update(1)
        return {"count": checksum.count, "checksum": checksum.hexdigest()}

    def _delete(self, index: str) -> None:
        with self.store._call(f"delete index {index}"):
            self.client.indices.delete(index=index, ignore_unavailable=True)

    # -- restore -----------------------------------------------------------------------------------

    def check(self, folder: Path, index: dict) -> None:
        repository, snapshot = str(index.get("repository")), str(index.get("snapshot"))
        self._repository(repository)
        info = self._snapshot(repository, snapshot)
        if info is None or (index.get("uuid") and info.get("uuid") != index["uuid"]):
            raise BackupError(f"backup {folder} names snapshot {snapshot}, which repository {repository} does not hold")
        if info.get("state") != "SUCCESS" or index.get("index") not in info.get("indices", []):
            raise BackupError(f"backup {folder} is damaged: snapshot {snapshot} is {info.get('state')}")

    def count(self) -> int:
        return self.store.count()

    def restore(self, folder: Path, manifest: dict, *, force: bool, bar: Bar,
                move_uploads: tuple[str, str] | None) -> dict:
        index = manifest["index"]
        return self._fill_and_go_live(folder, manifest, force, bar, lambda staged: self._restore_into(
            index["repository"], index["snapshot"], index["index"], staged, folder))

    def restore_documents(self, folder: Path, manifest: dict, batches: Iterable[list[Document]], *, force: bool,
                          bar: Bar) -> dict:
        """An embedded store's backup moved into Elasticsearch: its documents, as they are (vectors, near
        links, labels, metadata: no model runs), written into a new index with the configured type, shards
        and replicas, verified, then made live as a snapshot's restore is."""
        def write(staged: str) -> None:
            created = False
            with bar("documents", manifest["count"], "doc") as update:
                for documents in batches:
                    if not created:
                        self.store._create(manifest["descriptor"], np.asarray(documents[0].vector).shape[0],
                                           name=staged)
                        created = True
                    update(self.store.write(staged, documents))
            if not created:
                raise BackupError(f"backup {folder} is damaged: its database holds no documents")

        return self._fill_and_go_live(folder, manifest, force, bar, write)

    def _fill_and_go_live(self, folder: Path, manifest: dict, force: bool, bar: Bar,
                          fill: Callable[[str], None]) -> dict:
        """fill(name) a new physical index beside the live one, verify it against the manifest (else delete it:
        nothing changed), then make it live."""
        existing = self.count()
        if existing and not force:
            raise BackupError(f"{self.store.location()} holds {existing} documents: restore replaces them only "
                              "with --force")
        staged = f"{self.store.index_for(manifest['descriptor'])}-restored-{uuid.uuid4().hex[:8]}"
        try:
            fill(staged)
            figures = {**self._figures(staged, bar), "descriptor": manifest["descriptor"]}
            verify(folder, manifest, figures)
        except BaseException:
            self._delete(staged)
            raise
        self._go_live(staged)
        return figures

    def _go_live(self, staged: str) -> None:
        """Point the alias at `staged` in one step (readers see the old index or the new one, never neither),
        and delete the indices it replaced."""
        old = list(self.store._indices(self.store.alias))
        with self.store._call(f"point alias {self.store.alias} at {staged}"):
            self.client.indices.update_aliases(actions=swap_actions(self.store.alias, old, staged))
        for name in old:
            if name != staged:
                self._delete(name)
