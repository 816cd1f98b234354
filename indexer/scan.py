"""Find the image files under the given folders and the tags that go with each."""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from pathlib import PurePosixPath
from typing import Iterable, Iterator

from backend.imaging import is_image_path
from backend.ingest import FileToIndex
from backend.stores.base import document_id

from .exclude import Exclusions

_TAG_SEPARATORS = re.compile(r"[;|,]")


@dataclass(frozen=True)
class Shard:
    """--shard I/N: this indexer takes the files whose id falls in slot I of N (deterministic)."""
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard takes I/N, such as 0/4 (got {text!r})") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: I must be from 0 to N-1")
        return cls(index, count)

    def takes(self, doc_id: str) -> bool:
        return int(doc_id, 16) % self.count == self.index


def read_tags_csv(csv_path: Path) -> dict[str, list[str]]:
    """A CSV of `path,tags` rows (a header row is optional). Paths are relative to the CSV's folder or
    absolute; several tags in one field are separated by ';', '|' or ','."""
    tags: dict[str, list[str]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip() or row[0].strip().lower() == "path":
                continue
            path = (csv_path.parent / row[0].strip()).resolve()
            values = [t.strip() for field in row[1:] for t in _TAG_SEPARATORS.split(field) if t.strip()]
            tags.setdefault(str(path), []).extend(values)
    return tags


def scan(roots: Iterable[Path], *, tags_from_folders: bool = False, csv_tags: dict[str, list[str]] | None = None,
         extra_tags: Iterable[str] = (), shard: Shard | None = None,
         problems: list[tuple[str, str]] | None = None, skip: Iterable[Path] = (),
         exclusions: Exclusions | None = None) -> Iterator[FileToIndex]:
    """Image files under the roots (recursively, sorted, each file once), not under the `skip` folders
    (the data folder: its thumbnails and uploads are not photos to index again) and not left out by
    `exclusions` (default: the default exclusions). Files that cannot be taken (unreadable, name not
    UTF-8) are appended to `problems` as (path, reason)."""
    exclusions = exclusions if exclusions is not None else Exclusions()
    seen: set[Path] = set()
    problems = problems if problems is not None else []
    skipped = {Path(p).expanduser().resolve() for p in skip}
    for root in roots:
        root = Path(root).expanduser().resolve()
        for path in _walk(root, problems, skipped, exclusions):
            if path in seen:
                continue
            seen.add(path)
            item = file_to_index(path, root, tags_from_folders=tags_from_folders, csv_tags=csv_tags,
                                 extra_tags=extra_tags, shard=shard, problems=problems)
            if item is not None:
                yield item


def file_to_index(path: Path, root: Path, *, tags_from_folders: bool = False,
                  csv_tags: dict[str, list[str]] | None = None, extra_tags: Iterable[str] = (),
                  shard: Shard | None = None, problems: list[tuple[str, str]] | None = None) -> FileToIndex | None:
    """One image file found under `root` (both absolute), with its tags; None when it is not this shard's,
    or cannot be taken (then appended to `problems`)."""
    problems = problems if problems is not None else []
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        problems.append((os.fsdecode(path).encode("utf-8", "replace").decode(),
                         "file name is not valid UTF-8; rename it"))
        return None
    if shard and not shard.takes(document_id(str(path))):
        return None
    try:
        stat = path.stat()
    except OSError as exc:
        problems.append((str(path), f"cannot read file ({exc.strerror})"))
        return None
    tags = list(extra_tags)
    if tags_from_folders and root.is_dir():
        tags.extend(part for part in path.parent.relative_to(root).parts)
    tags.extend((csv_tags or {}).get(str(path), ()))
    return FileToIndex(path, tuple(dict.fromkeys(tags)), stat.st_size, stat.st_mtime, root)


def _walk(root: Path, problems: list[tuple[str, str]], skipped: set[Path],
          exclusions: Exclusions) -> Iterator[Path]:
    if root.is_file():
        if is_image_path(root):
            yield root
        return
    if not root.is_dir():
        problems.append((str(root), "no such file or folder"))
        return

    def on_error(exc: OSError):
        problems.append((exc.filename or str(root), f"cannot list folder ({exc.strerror})"))

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        if Path(folder) in skipped:
            dirs[:] = []
            continue
        here = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not exclusions.folder(here / d))
        for name in sorted(files):
            path = Path(folder) / name
            if not exclusions.file(here / name) and is_image_path(path) and path.is_file():
                yield path
