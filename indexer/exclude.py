"""Folders and files left out of indexing: gitignore-style patterns on paths relative to the indexed root.

The matching is pathspec's (`GitIgnoreSpec`, git's own rules: `*`, `**`, `?`, `[...]`, a trailing `/` for
folders only, a `/` inside or at the start anchoring the pattern to the root, `!` to take back a path an
earlier pattern left out). A folder left out is never walked into, so nothing under it is taken back by
a later `!` pattern: the same as git.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from pathspec import GitIgnoreSpec

# What photo tools and NAS systems leave beside the photos: hidden files and folders (.thumbnails and
# .Trash-1000 among them), Synology's thumbnail folders, the recycle bin of Synology and QNAP shares, and
# fsck's lost+found.
DEFAULT_EXCLUDES = (".*", "@eaDir/", ".thumbnails/", "#recycle/", ".Trash-*/", "lost+found/")


class ExcludeError(ValueError):
    """A pattern pathspec cannot read."""


class Exclusions:
    """The patterns in force (the defaults first unless turned off, then the user's, in order)."""

    def __init__(self, patterns: Iterable[str] = (), *, defaults: bool = True):
        self.patterns: tuple[str, ...] = (DEFAULT_EXCLUDES if defaults else ()) + tuple(patterns)
        if any(not pattern.strip() for pattern in self.patterns):
            raise ExcludeError("an --exclude pattern is empty")
        # On the command line a pattern is never a comment: a leading '#' means the character.
        lines = ["\\" + pattern if pattern.startswith("#") else pattern for pattern in self.patterns]
        for pattern, line in zip(self.patterns, lines):
            try:
                compiled = GitIgnoreSpec.from_lines([line]).patterns[0]
            except re.error as exc:               # a [range] the regular expression refuses
                raise ExcludeError(f"{pattern!r} is not a valid --exclude pattern ({exc.msg})") from None
            except ValueError:                    # pathspec's own refusal
                raise ExcludeError(f"{pattern!r} is not a valid --exclude pattern") from None
            if compiled.include is None:          # what git reads as matching nothing ('/', '[')
                raise ExcludeError(f"the --exclude pattern {pattern!r} matches nothing")
        self._spec = GitIgnoreSpec.from_lines(lines)

    def folder(self, relative: PurePosixPath) -> bool:
        """Whether the folder at this path (relative to the root) is left out, with everything under it."""
        return bool(relative.parts) and self._spec.match_file(f"{relative}/")

    def file(self, relative: PurePosixPath) -> bool:
        """Whether this file (relative to the root), whose folders are taken, is left out."""
        return self._spec.match_file(str(relative))

    def covers(self, relative: PurePosixPath) -> bool:
        """Whether a file at this path (relative to the root) is left out, by itself or by a folder of it."""
        folders = relative.parents[:-1]    # the file's folders, innermost first, without the root itself
        return any(self.folder(f) for f in reversed(folders)) or self.file(relative)


def left_out(path: Path, roots: Sequence[Path], exclusions: Exclusions, keep: Iterable[Path] = ()) -> bool:
    """Whether an index run over `roots` (absolute) leaves this file out by an exclusion: it lies under
    roots and every one of them that holds it excludes it. A path under none of the roots is not this
    run's to judge, nor one under a `keep` folder (the data folder: the API's uploads are documents the
    walk never takes, yet not left out)."""
    if any(path.is_relative_to(k) for k in keep):
        return False
    holding = [root for root in roots if path != root and path.is_relative_to(root)]
    return bool(holding) and all(
        exclusions.covers(PurePosixPath(path.relative_to(root).as_posix())) for root in holding)
