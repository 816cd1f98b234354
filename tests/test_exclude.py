"""Exclusions: the default set, gitignore-style --exclude patterns, and --prune of what they now cover."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.imaging import Limits
from backend.ingest import Indexer
from backend.stores.embedded import EmbeddedStore
from indexer.exclude import DEFAULT_EXCLUDES, ExcludeError, Exclusions, left_out
from indexer.scan import scan

from .conftest import ROOT, picture

# One picture in each place the default exclusions leave out, and four they keep.
LEFT_OUT = [".hidden/a.jpg", ".photo.jpg", "2024/@eaDir/b.jpg", "#recycle/c.jpg", ".Trash-1000/d.jpg",
            "lost+found/e.jpg", "2024/.thumbnails/f.jpg", "2024/trip/.git/g.jpg"]
KEPT = ["2024/trip/beach.jpg", "2024/trip/raw/beach.png", "top.jpg", "eaDir/recycle.jpg"]


@pytest.fixture
def library(tmp_path) -> Path:
    # The root itself sits in a hidden folder: patterns are judged on paths relative to it, never above.
    root = tmp_path / ".config" / "library"
    for i, name in enumerate(LEFT_OUT + KEPT):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        picture(i, (48, 32)).save(root / name)
    return root


def found(root: Path, exclusions: Exclusions | None = None) -> list[str]:
    return sorted(str(f.path.relative_to(root)) for f in scan([root], exclusions=exclusions))


def test_the_default_exclusions_leave_out_each_folder_photo_tools_and_nas_systems_keep(library):
    assert found(library) == sorted(KEPT)
    assert found(library, Exclusions()) == sorted(KEPT)
    assert found(library, Exclusions(defaults=False)) == sorted(LEFT_OUT + KEPT)


def test_exclude_patterns_follow_gitignore_rules(library):
    assert found(library, Exclusions(["raw/"])) == sorted(set(KEPT) - {"2024/trip/raw/beach.png"})
    assert found(library, Exclusions(["*.png", "/top.jpg"])) == ["2024/trip/beach.jpg", "eaDir/recycle.jpg"]
    assert found(library, Exclusions(["trip/"])) == ["eaDir/recycle.jpg", "top.jpg"]     # at any depth
    assert found(library, Exclusions(["/trip/"])) == sorted(KEPT)                      # anchored: none at the top
    assert found(library, Exclusions(["2024/**/*.jpg"])) == sorted(set(KEPT) - {"2024/trip/beach.jpg"})
    # '!' takes back what an earlier pattern (a default among them) left out
    assert found(library, Exclusions(["!.hidden/"])) == sorted(KEPT + [".hidden/a.jpg"])
    # a leading '#' is the character, not a comment
    assert found(library, Exclusions(["#recycle/"], defaults=False)) == \
        sorted(set(LEFT_OUT + KEPT) - {"#recycle/c.jpg"})


@pytest.mark.parametrize("pattern, words", [("", "is empty"), ("!", "'!' is not a valid"), ("[z-a]", "not a valid"),
                                            ("/", "matches nothing")])
def test_a_pattern_that_cannot_work_is_refused(pattern, words):
    with pytest.raises(ExcludeError, match=words):
        Exclusions([pattern])


def test_left_out_judges_a_file_by_every_root_that_holds_it(library, tmp_path):
    exclusions = Exclusions(["raw/"])
    raw = library / "2024/trip/raw/beach.png"
    assert left_out(raw, [library], exclusions)
    assert not left_out(raw, [library, library / "2024/trip/raw"], exclusions)   # given as a root of its own
    assert not left_out(tmp_path / "elsewhere.jpg", [library], exclusions)          # not this run's
    assert not left_out(library / ".hidden/a.jpg", [library], exclusions, keep=[library / ".hidden"])


def test_prune_removes_what_an_exclusion_now_covers_and_keeps_the_rest(library, fast_extractor, tmp_path):
    with EmbeddedStore(tmp_path / "store" / "index.sqlite3") as store:
        indexer = Indexer(store, fast_extractor, Limits(), batch_size=4)
        everything = Exclusions(defaults=False)
        assert indexer.run(scan([library], exclusions=everything)).indexed == len(LEFT_OUT + KEPT)
        now = Exclusions(["raw/"])
        summary = indexer.run(scan([library], exclusions=now), prune_under=[library],
                              left_out=lambda path: left_out(path, [library], now))
        assert summary.pruned == len(LEFT_OUT) + 1
        assert sorted(Path(e.path).relative_to(library).as_posix() for e in store.entries()) == \
            sorted(set(KEPT) - {"2024/trip/raw/beach.png"})
        # without --prune, documents of excluded files stay
        indexer.run(scan([library], exclusions=everything))
        assert indexer.run(scan([library], exclusions=now)).pruned == 0
        assert store.count() == len(LEFT_OUT + KEPT)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_cli_exclude_no_default_excludes_prune_and_help(fast_env, library):
    helped = cli(fast_env, "index", "--help")
    assert helped.returncode == 0
    assert all(pattern in " ".join(helped.stdout.split()) for pattern in DEFAULT_EXCLUDES)
    assert "--no-default-excludes" in helped.stdout and "--exclude PATTERN" in helped.stdout
    first = cli(fast_env, "index", str(library), "--no-default-excludes", "--json")
    assert first.returncode == 0 and '"indexed": 12' in first.stdout
    pruned = cli(fast_env, "index", str(library), "--exclude", "*.png", "--prune", "--json")
    assert pruned.returncode == 0 and '"pruned": 9' in pruned.stdout, pruned.stderr[-1000:]
    bad = cli(fast_env, "index", str(library), "--exclude", "[z-a]")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "error: argument --exclude: '[z-a]' is not a valid --exclude pattern (bad character range z-a)")
