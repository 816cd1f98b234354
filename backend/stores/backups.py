"""The store's side of a backup (backend/backup.py has the rest): each backend copies its index with the
tool its engine provides for a consistent online copy, puts it back, and answers the figures a restore is
verified against. One class per backend, chosen by `index_copy(settings)`."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .base import Document, StoreError


class BackupError(StoreError):
    """A backup that cannot be made, or a backup that restore refuses; the message says why in one line."""


# A progress bar the caller shows: bar(description, total, unit) -> a context giving update(n).
Bar = Callable[[str, int, str], AbstractContextManager[Callable[[int], None]]]


def no_bar(description: str, total: int, unit: str) -> AbstractContextManager[Callable[[int], None]]:
    return nullcontext(lambda n: None)


class Checksum:
    """SHA-256 of every document's id and vector (little-endian float32), in no particular order: each
    document's digest is collected and the sorted digests hashed, so both stores, read in any order, give
    the same figure for the same documents."""

    def __init__(self) -> None:
        self._digests: list[bytes] = []

    def add(self, doc_id: str, vector: bytes) -> None:
        self._digests.append(hashlib.sha256(doc_id.encode("utf-8", "surrogateescape") + b"\0" + vector).digest())

    def add_vector(self, doc_id: str, values: Iterable[float]) -> None:
        self.add(doc_id, np.asarray(values, dtype="<f4").tobytes())

    @property
    def count(self) -> int:
        return len(self._digests)

    def hexdigest(self) -> str:
        whole = hashlib.sha256()
        for digest in sorted(self._digests):
            whole.update(digest)
        return whole.hexdigest()


class IndexCopy(ABC):
    """How one backend's index is copied into a backup and put back. `copy` and `restore` return the
    figures of what they copied: {"count", "checksum", "descriptor", "index": details for the manifest}."""

    backend: str

    @abstractmethod
    def copy(self, folder: Path, bar: Bar, repository: str | None) -> dict:
        """A consistent copy of the live index, taken while others keep reading and writing, into `folder`
        (or the named snapshot repository), with its figures read from the copy itself."""

    @abstractmethod
    def check(self, folder: Path, index: dict) -> None:
        """Raise BackupError when the copy described by `index` (the manifest's) is missing or damaged; cheap,
        and before anything is changed."""

    @abstractmethod
    def count(self) -> int:
        """Documents in the live index now (0 when there is none)."""

    @abstractmethod
    def restore(self, folder: Path, manifest: dict, *, force: bool, bar: Bar,
                move_uploads: tuple[str, str] | None) -> dict:
        """Put the copy back in place of the live index, verified against the manifest's count and checksum
        before the live index changes (else BackupError, and nothing changed). move_uploads: (old folder,
        new folder) when the uploads now live elsewhere, so documents' paths under the old one follow."""

    def restore_documents(self, folder: Path, manifest: dict, batches: Iterable[list[Document]], *, force: bool,
                          bar: Bar) -> dict:
        """Fill the live index with another backend's backed-up documents (`batches`), verified against the
        manifest as restore() is. Only where a store can take another's backup."""
        raise BackupError(f"the {self.backend} store restores only its own backups")

    def close(self) -> None:
        """Let go of connections to the store."""


def verify(folder: Path, manifest: dict, figures: dict) -> None:
    """The restored documents are the backed-up ones: same count, same checksum of ids and vectors."""
    for key in ("count", "checksum", "descriptor"):
        if figures[key] != manifest[key]:
            raise BackupError(f"backup {folder} is damaged: the restored {key} is {figures[key]}, its manifest "
                              f"says {manifest[key]}; nothing was changed")


def index_copy(settings) -> IndexCopy:
    if settings.uses_elasticsearch:
        from .elastic_backup import ElasticCopy   # the client is imported only when it is used
        return ElasticCopy(settings)
    from .embedded_backup import EmbeddedCopy
    return EmbeddedCopy(settings.embedded_path)
