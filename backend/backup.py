"""Backups that restore: `lookalike backup DEST` and `lookalike restore SOURCE`.

A backup is a folder: `manifest.json` (what it holds: backend, descriptor, document count, a checksum of
every id and vector, time, product version), the index copy (the embedded store's database, or the name of
an Elasticsearch snapshot in a repository the user registered), and `uploads/`, the pictures added through
the API (they live only in the data folder). Thumbnails, the vector snapshot and the query-vector cache are
not copied: they are caches, rebuilt on use.

The folder is written under a hidden name beside DEST and renamed to DEST only once complete, with the
manifest written last: a backup interrupted at any point (even by kill -9) leaves nothing that restore
accepts. Restore checks the copy against the manifest before it touches the live index, puts the index back,
and verifies count and checksum before it says "restored". The store's own part is backend/stores/backups.py.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .features import DescriptorSpec, planned_precision, weights_tag
from .filelock import fsync, write_atomically
from .stores import DescriptorMismatch
from .stores.backups import Bar, BackupError, index_copy, no_bar
from .stores.base import ELASTICSEARCH, EMBEDDED
from .stores.embedded_backup import backup_documents, check_file, file_sha256

FORMAT = "lookalike-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
UPLOADS = "uploads"
REBUILT = ["vector snapshot", "thumbnails", "query-vector cache"]

__all__ = ["BackupError", "backup", "restore", "read_manifest"]


def product_version() -> str:
    try:
        return metadata.version("lookalike")
    except metadata.PackageNotFoundError:
        return "unknown"


def configured_descriptor(settings) -> str:
    """The descriptor id the settings' model would give its vectors (without building the model)."""
    spec = DescriptorSpec(settings.pooling, settings.image_size, settings.square)
    return spec.descriptor_id(weights_tag(settings.vgg16_weights), planned_precision(settings)["precision"])


@dataclass
class Summary:
    backend: str
    folder: str
    count: int
    checksum: str
    descriptor: str
    uploads: int
    seconds: float

    def as_json(self) -> dict:
        return dict(self.__dict__)


def backup(settings, dest: Path, *, repository: str | None = None, bar: Bar = no_bar) -> Summary:
    """Back up the configured store into the new folder `dest`."""
    started = time.time()
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists: back up into a new folder")
    part = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    part.mkdir(parents=True)
    copier = index_copy(settings)
    try:
        figures = copier.copy(part, bar, repository)
        if not figures["count"]:
            raise BackupError("the store holds no documents: nothing to back up")
        uploads = _copy_uploads(settings.uploads_dir, part / UPLOADS, bar)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "product_version": product_version(),
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "backend": copier.backend, "descriptor": figures["descriptor"], "count": figures["count"],
                    "checksum": figures["checksum"], "index": figures["index"],
                    "uploads": {"folder": str(settings.uploads_dir.absolute()), "files": uploads},
                    "rebuilt": REBUILT}
        write_atomically(part / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode())
        fsync(part)
        if dest.exists():
            dest.rmdir()   # empty (checked above)
        part.rename(dest)
        fsync(dest.parent)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    finally:
        copier.close()
    return Summary(copier.backend, str(dest), figures["count"], figures["checksum"], figures["descriptor"],
                   len(uploads), round(time.time() - started, 3))


def _copy_uploads(source: Path, target: Path, bar: Bar) -> dict[str, int]:
    """The uploaded pictures, {file name: bytes}. Their names are their content's SHA-256, so restore can
    check each one. A picture deleted while it is being copied is simply left out."""
    files = sorted(p for p in source.glob("*") if p.is_file()) if source.is_dir() else []
    copied: dict[str, int] = {}
    with bar("uploads", len(files), "file") as update:
        for path in files:
            try:
                target.mkdir(exist_ok=True)
                shutil.copyfile(path, target / path.name)
                copied[path.name] = (target / path.name).stat().st_size
            except FileNotFoundError:
                pass
            update(1)
    return copied


def read_manifest(folder: Path) -> dict:
    """The manifest of a complete backup; BackupError (one line) for anything else."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupError(f"no backup at {folder}")
    if not path.is_file():
        raise BackupError(f"{folder} is not a complete backup: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError("not a lookalike backup")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {manifest.get('format_version')}, this program reads {FORMAT_VERSION}")
        for key, kind in (("backend", str), ("descriptor", str), ("count", int), ("checksum", str), ("index", dict),
                          ("uploads", dict)):
            if not isinstance(manifest.get(key), kind):
                raise ValueError(f"{key!r} is missing")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise BackupError(f"backup {folder} is damaged: its {MANIFEST} cannot be read ({exc})") from None
    return manifest


def restore(settings, source: Path, *, force: bool = False, bar: Bar = no_bar) -> Summary:
    """Put the backup in `source` back as the configured store, verified; raises BackupError (and changes
    nothing) when the backup is incomplete, damaged, of another descriptor, or the store is in use or not
    empty without `force`. An embedded store's backup also restores into Elasticsearch (its documents are
    written there as they are); an Elasticsearch backup restores into Elasticsearch only."""
    started = time.time()
    source = Path(source).expanduser().absolute()
    manifest = read_manifest(source)
    copier = index_copy(settings)
    try:
        moving = manifest["backend"] != copier.backend
        if moving and (manifest["backend"], copier.backend) != (EMBEDDED, ELASTICSEARCH):
            raise BackupError(f"backup {source} is of an {manifest['backend']} store; LOOKALIKE_STORE names an "
                              f"{copier.backend} one (an embedded store's backup restores into either, an "
                              "Elasticsearch one into Elasticsearch only)")
        wanted = configured_descriptor(settings)
        if manifest["descriptor"] != wanted:
            raise DescriptorMismatch(f"backup {source} holds {manifest['descriptor']} vectors; the settings make "
                                     f"{wanted} (restore with the settings it was made with)")
        (check_file if moving else copier.check)(source, manifest["index"])
        uploads = _checked_uploads(source, manifest)
        old = str(manifest["uploads"].get("folder") or "")
        new = str(settings.uploads_dir.absolute())
        move = (old.rstrip("/") + "/", new.rstrip("/") + "/") if old and old != new else None
        if moving:   # an embedded store's documents into Elasticsearch, as they are
            figures = copier.restore_documents(source, manifest, backup_documents(source, manifest, move_uploads=move),
                                               force=force, bar=bar)
        else:
            figures = copier.restore(source, manifest, force=force, bar=bar, move_uploads=move)
    finally:
        copier.close()
    _restore_uploads(uploads, settings.uploads_dir)
    return Summary(manifest["backend"], str(source), figures["count"], figures["checksum"], figures["descriptor"],
                   len(uploads), round(time.time() - started, 3))


def _checked_uploads(source: Path, manifest: dict) -> list[Path]:
    """The backup's uploads, each checked against its name (its content's SHA-256) and size."""
    files = []
    for name, size in manifest["uploads"].get("files", {}).items():
        path = source / UPLOADS / name
        if not path.is_file() or path.stat().st_size != size or file_sha256(path) != Path(name).stem:
            raise BackupError(f"backup {source} is damaged: the upload {name} is missing or altered")
        files.append(path)
    return files


def _restore_uploads(files: list[Path], folder: Path) -> None:
    """Copy the uploads in; one already there (the same name is the same content) is left alone."""
    for path in files:
        target = folder / path.name
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

