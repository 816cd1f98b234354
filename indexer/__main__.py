"""lookalike (or python -m indexer): index folders of images, show the store's stats, search from the command
line, serve the API and the web page."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from backend import duplicates
from backend.allocator import tune_allocator
from backend.backup import Summary as BackupSummary
from backend.backup import backup, restore
from backend.config import ConfigError, Settings
from backend.factory import Engine, open_engine
from backend.features import DescriptorSpec, FeatureExtractor, WeightsError, planned_precision, weights_tag
from backend.imaging import ImageError, read_file
from backend.ingest import entries_under
from backend.stores import StoreError

from .exclude import DEFAULT_EXCLUDES, ExcludeError, Exclusions, left_out
from .scan import Shard, file_to_index, read_tags_csv, scan
from .watch import Follower, Step


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.run is _serve:
        return _serve(args)   # each worker tunes its allocator itself (create_app)
    tune_allocator()   # decode threads and large short-lived buffers, as in a server (backend/allocator.py)
    try:
        settings = Settings.from_env()
        if args.run in (_backup, _restore):
            return args.run(args, settings)   # no model; restore must not hold the store open itself
        if args.batch_size:
            settings = settings.with_(batch_size=args.batch_size)
        if getattr(args, "labels", None) is False:
            settings = settings.with_(labels=False)
        if args.run is not _index and not settings.uses_elasticsearch and not settings.embedded_path.exists():
            print(f"error: no index at {settings.embedded_path} yet: index a folder first (python -m indexer "
                  "index FOLDER), or set LOOKALIKE_DATA_DIR to the folder that holds it", file=sys.stderr)
            return 1
        # Indexing names the model it runs, once built (the first file that needs it).
        with open_engine(settings, on_model=_announce if args.run is _index else None) as engine:
            return args.run(args, engine)
    except KeyboardInterrupt:
        print("interrupted: everything indexed so far is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ConfigError, WeightsError, StoreError, ImageError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, ValueError)) else 1


def _parser() -> argparse.ArgumentParser:
    # `lookalike` (the installed command) and `python -m indexer` are this one parser.
    prog = "python -m indexer" if Path(sys.argv[0]).name == "__main__.py" else Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    index = sub.add_parser("index", help="index image files under folders (new and changed files only)",
                           epilog="default exclusions (gitignore-style, relative to each PATH): "
                                  + "  ".join(DEFAULT_EXCLUDES) + " -- hidden files and folders, NAS thumbnail "
                                  "and recycle folders; --no-default-excludes turns them off")
    index.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders or files")
    index.add_argument("--exclude", action="append", default=[], type=_pattern, metavar="PATTERN",
                       help="leave out files and folders matching this gitignore-style pattern, relative to PATH "
                            "(repeat; '!PATTERN' takes back what an earlier one left out)")
    index.add_argument("--no-default-excludes", action="store_true",
                       help="do not leave out the default exclusions listed below")
    index.add_argument("--watch", action="store_true",
                       help="index once, then keep following the folders (new, changed, moved and deleted "
                            "pictures) until SIGTERM or Ctrl-C")
    index.add_argument("--tags-from-folders", action="store_true",
                       help="tag each image with its sub-folder names relative to PATH")
    index.add_argument("--tags-csv", type=_existing_file, metavar="FILE",
                       help="CSV of path,tags rows (paths relative to the CSV's folder)")
    index.add_argument("--tag", action="append", default=[], metavar="TAG", help="a tag for every file (repeat)")
    index.add_argument("--prune", action="store_true",
                       help="remove documents under PATH whose files are gone or now excluded")
    index.add_argument("--shard", type=_shard, metavar="I/N",
                       help="take only slot I of N (0-based) of the files, for N indexers in parallel")
    index.add_argument("--rebuild", action="store_true",
                       help="Elasticsearch: fill a new index for the configured descriptor beside the live one, "
                            "then switch the alias to it (not with --shard: run once more without it to switch)")
    index.add_argument("--no-labels", dest="labels", action="store_false", default=None,
                       help="give pictures no content labels (ImageNet classes; the default is LOOKALIKE_LABELS)")
    _common(index)
    index.set_defaults(run=_index)

    remove = sub.add_parser("remove", help="remove the documents of files at or under PATH (the files stay)")
    remove.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders or files")
    remove.add_argument("--json", action="store_true", help="print one JSON object")
    remove.set_defaults(run=_remove, batch_size=None)

    dup = sub.add_parser("duplicates", help="groups of copies (same bytes) or near copies (the same picture edited), "
                                            "largest first, the suggested keeper first")
    dup.add_argument("--level", choices=duplicates.LEVELS, default=duplicates.NEAR,
                     help="exact: the same bytes; near (default): the same picture after edits such as resizing, "
                          "recompressing, cropping a little, brightness or a watermark")
    dup.add_argument("--min-score", type=float, metavar="S",
                     help=f"near: how similar two pictures must be, {duplicates.LINK_FLOOR} to 1 "
                          f"(default {duplicates.NEAR_MIN_SCORE})")
    dup.add_argument("--under", action="append", default=[], type=Path, metavar="PATH",
                     help="only pictures under this folder (repeat)")
    dup.add_argument("--tag", action="append", default=[], metavar="TAG", help="only pictures with this tag (repeat)")
    dup.add_argument("--move-to", type=Path, metavar="DIR",
                     help="move every picture but the keeper into DIR (its path relative to --under kept, never "
                          "overwriting a file) and remove it from the index; without it nothing on disk changes")
    dup.add_argument("--json", action="store_true", help="end with one JSON object on standard output")
    dup.set_defaults(run=_duplicates, batch_size=None)

    stats = sub.add_parser("stats", help="document count, descriptor, backend, data location")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(run=_stats, batch_size=None)

    search = sub.add_parser("search", help="search by an image file or by keywords")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", type=_existing_file, metavar="FILE")
    query.add_argument("--text", metavar="WORDS")
    search.add_argument("-k", type=_positive, default=10, metavar="N",
                        help="how many results (default 10, at most 1000)")
    search.add_argument("--tag", action="append", default=[], metavar="TAG", help="only results with this tag")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(run=_search, batch_size=None)

    backup = sub.add_parser("backup", help="copy the whole index (and uploads) into a new folder, online, with a "
                                           "manifest to verify it by")
    backup.add_argument("dest", type=Path, metavar="DEST", help="a new folder")
    backup.add_argument("--repository", metavar="NAME",
                        help="Elasticsearch: the registered snapshot repository the index is copied into")
    backup.add_argument("--json", action="store_true", help="end with one JSON summary line on standard output")
    backup.set_defaults(run=_backup, batch_size=None)

    restore = sub.add_parser("restore", help="put a backup back as the index, verified (count and checksum)")
    restore.add_argument("source", type=Path, metavar="SOURCE", help="a folder made by backup")
    restore.add_argument("--force", action="store_true", help="replace an index that holds documents")
    restore.add_argument("--json", action="store_true", help="end with one JSON summary line on standard output")
    restore.set_defaults(run=_restore, batch_size=None)

    serve = sub.add_parser("serve", help="serve the JSON API and the web page with gunicorn "
                                         "(settings: GUNICORN_*, HOST, PORT, LOOKALIKE_*)")
    serve.add_argument("--bind", metavar="ADDRESS", help="HOST:PORT or unix:PATH (default: GUNICORN_BIND, "
                                                         "else HOST:PORT, else 127.0.0.1:8000)")
    serve.add_argument("--workers", type=_positive, metavar="N", help="processes (default: GUNICORN_WORKERS, else 2)")
    serve.set_defaults(run=_serve)
    return parser


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pattern(text: str) -> str:
    try:
        Exclusions([text], defaults=False)
    except ExcludeError as exc:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more (got {text!r})")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=_positive, metavar="N", help="images per model call (default 16)")
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line on standard output")


def _announce(extractor: FeatureExtractor) -> None:
    print(f"model: {extractor.describe()}", file=sys.stderr, flush=True)


def _index(args, engine: Engine) -> int:
    from tqdm import tqdm

    settings, store = engine.settings, engine.store
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise ValueError(f"no such file or folder: {', '.join(missing)}")
    exclusions = Exclusions(args.exclude, defaults=not args.no_default_excludes)
    roots = [p.expanduser().resolve() for p in args.paths]
    if args.watch and (args.rebuild or any(not root.is_dir() for root in roots)):
        raise ValueError("--watch follows folders: give folders only, and not --rebuild")
    if args.rebuild:
        if not store.supports_rebuild:
            raise ValueError("--rebuild needs an Elasticsearch store (LOOKALIKE_STORE=http://...)")
        spec = DescriptorSpec(settings.pooling, settings.image_size, settings.square)
        store.stage(spec.descriptor_id(weights_tag(settings.vgg16_weights)))
    csv_tags = read_tags_csv(args.tags_csv) if args.tags_csv else None
    # With no tag option, tags already given are kept: a plain re-run must not strip them.
    keep_tags = not (args.tags_from_folders or args.tags_csv or args.tag)
    keep = [settings.data_dir.expanduser().resolve()]

    def excluded(path: Path) -> bool:
        return left_out(path, roots, exclusions, keep)

    def index_once(progress: Callable[[int], None]) -> None:
        problems: list[tuple[str, str]] = []
        files = list(scan(roots, tags_from_folders=args.tags_from_folders, csv_tags=csv_tags, extra_tags=args.tag,
                          shard=args.shard, problems=problems, skip=keep, exclusions=exclusions))
        if csv_tags:
            unused = sorted(set(csv_tags) - {str(f.path) for f in files})
            if unused and not args.shard:
                print(f"warning: {len(unused)} rows of {args.tags_csv} name no image under the given paths, "
                      f"such as {unused[0]}", file=sys.stderr)
        bar = None

        def on_plan(total: int) -> None:
            nonlocal bar
            # tqdm shows rate and ETA; disable=None turns it off when stderr is not a terminal
            bar = tqdm(total=total, unit="img", desc="indexing", disable=None, file=sys.stderr, dynamic_ncols=True)

        def on_batch(count: int) -> None:
            if bar is not None:
                bar.update(count)
            progress(count)

        try:
            summary = engine.indexer.run(files, prune_under=roots if args.prune else (), on_plan=on_plan,
                                         progress=on_batch, failures=problems, keep_tags=keep_tags,
                                         left_out=excluded)
        finally:
            if bar is not None:
                bar.close()
        for path, reason in summary.failures[:20]:
            print(f"failed: {path}: {reason}", file=sys.stderr)
        if summary.failed > 20:
            print(f"failed: ... and {summary.failed - 20} more (see --json)", file=sys.stderr)
        rate = (summary.indexed - summary.reused) / summary.seconds if summary.seconds else 0.0
        print(f"indexed {summary.indexed} (reused {summary.reused} stored vectors), skipped {summary.skipped} "
              f"unchanged, failed {summary.failed}, pruned {summary.pruned} in {summary.seconds:.1f} s "
              f"({rate:.1f} images/s through the model); {store.count()} documents in {store.location()}",
              flush=True)
        if args.rebuild and not args.shard:
            print(f"the alias now points at {store.promote()}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary.as_json(), ensure_ascii=False), flush=True)

    if not args.watch:
        index_once(lambda count: None)
        return 0
    take = partial(file_to_index, tags_from_folders=args.tags_from_folders, csv_tags=csv_tags,
                   extra_tags=args.tag, shard=args.shard)
    follower = Follower(engine.indexer, roots, take=take, excluded=excluded, keep_tags=keep_tags,
                        report=_step_reporter(args.json, store))
    return follower.run(index_once)


def _step_reporter(as_json: bool, store) -> Callable[[Step], None]:
    """How --watch reports each step: a line (failures on standard error), or one JSON object."""
    def report(step: Step) -> None:
        if as_json:
            print(json.dumps(step.as_json(), ensure_ascii=False), flush=True)
            return
        for path, reason in step.summary.failures:
            print(f"failed: {path}: {reason}", file=sys.stderr)
        summary = step.summary
        print(f"{time.strftime('%H:%M:%S')} indexed {summary.indexed} (reused {summary.reused} stored vectors), "
              f"removed {step.removed}, failed {summary.failed}; {store.count()} documents", flush=True)
    return report


def _remove(args, engine: Engine) -> int:
    store = engine.store
    removed = store.delete([entry.id for entry in entries_under(store.entries(), args.paths)])
    if args.json:
        print(json.dumps({"removed": removed, "count": store.count()}))
    else:
        print(f"removed {removed} documents; {store.count()} left in {store.location()}")
    return 0


def _duplicates(args, engine: Engine) -> int:
    try:
        report = duplicates.find_groups(engine.store, level=args.level, min_score=args.min_score, tags=args.tag,
                                        under=args.under)
    except duplicates.BadRequest as exc:
        raise ValueError(str(exc)) from None
    what = "identical files" if report.level == duplicates.EXACT else f"near duplicates (min score {report.min_score})"
    print(f"{report.total} groups of {what}, {report.pictures} pictures", file=sys.stderr if args.json else sys.stdout)
    if not args.json:
        for n, group in enumerate(report.groups, 1):
            print(f"\ngroup {n}: {len(group.members)} pictures")
            for member in group.members:
                doc, mark = member.document, "keep" if member is group.keeper else ""
                print(f"  {mark:4}  {member.score:.4f}  {doc.width}x{doc.height}  {doc.bytes:>10,} B  {doc.id}  "
                      f"{doc.path}")
    moved, failed = _move_duplicates(args, engine, report) if args.move_to else ([], [])
    if args.json:
        print(json.dumps({"level": report.level, "min_score": report.min_score, "total": report.total,
                          "pictures": report.pictures,
                          "groups": [{"members": [_member_json(m, m is g.keeper) for m in g.members]}
                                     for g in report.groups],
                          "moved": [{"id": i, "from": a, "to": b} for i, a, b in moved],
                          "failed": [{"path": p, "reason": r} for p, r in failed]}, ensure_ascii=False))
    return 1 if failed else 0


def _member_json(member: duplicates.Member, keeper: bool) -> dict:
    doc = member.document
    return {"id": doc.id, "path": doc.path, "width": doc.width, "height": doc.height, "bytes": doc.bytes,
            "score": member.score, "keeper": keeper, "filename": doc.filename, "tags": doc.tags,
            "content_hash": doc.content_hash, "modified_at": doc.modified_at}


def _move_duplicates(args, engine: Engine, report: duplicates.Report):
    """Move every non-keeper's file aside and remove its document; a file that cannot be moved stays indexed."""
    roots = [p.expanduser().resolve() for p in args.under]
    moved: list[tuple[str, str, str]] = []
    failed: list[tuple[str, str]] = []
    for group in report.groups:
        for member in group.members[1:]:
            path = Path(member.document.path)
            root = next((r for r in roots if path.is_relative_to(r)), None)
            try:
                target = duplicates.move_aside(path, args.move_to.expanduser().resolve(), root)
            except OSError as exc:
                failed.append((str(path), exc.strerror or str(exc)))
                print(f"failed: {path}: {exc.strerror or exc}", file=sys.stderr)
                continue
            engine.store.delete([member.document.id])
            moved.append((member.document.id, str(path), str(target)))
    print(f"moved {len(moved)} files into {args.move_to} and removed them from the index"
          + (f"; {len(failed)} could not be moved" if failed else ""), file=sys.stderr)
    return moved, failed


def _stats(args, engine: Engine) -> int:
    planned = planned_precision(engine.settings)
    stats = {**engine.store.stats(), "precision": planned["precision"], "precision_reason": planned["reason"],
             "cpu": planned["cpu"]}
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        for key, value in stats.items():
            print(f"{key:>10}: {value}")
    return 0


def _search(args, engine: Engine) -> int:
    if args.text is not None and not args.text.strip():
        raise ValueError("--text needs at least one word")
    service = engine.service
    limit = min(args.k, 1000)
    if args.image:
        data = read_file(args.image, service.limits)
        page = service.by_image(data, tags=args.tag, limit=limit, source=str(args.image))
    else:
        page = service.by_text(args.text, tags=args.tag, limit=limit)
    if args.json:
        print(json.dumps({"total": page.total, "results": [
            {**hit.document.metadata(), "score": round(hit.score, 6)} for hit in page.hits]}, ensure_ascii=False))
        return 0
    print(f"{page.total} matching; top {len(page.hits)}:")
    for hit in page.hits:
        print(f"{hit.score:8.4f}  {hit.document.path}  [{', '.join(hit.document.tags)}]")
    return 0


@contextmanager
def _bar(description: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (tqdm; nothing when standard error is not one)."""
    from tqdm import tqdm

    scale = unit == "B"
    with tqdm(total=total, unit=unit, unit_scale=scale, desc=description, disable=None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        yield bar.update


def _backup(args, settings: Settings) -> int:
    summary = backup(settings, args.dest, repository=args.repository, bar=_bar)
    return _summary(args, summary, f"backed up {summary.count} documents ({summary.descriptor}) and "
                                   f"{summary.uploads} uploads into {summary.folder}", "checksum")


def _restore(args, settings: Settings) -> int:
    summary = restore(settings, args.source, force=args.force, bar=_bar)
    return _summary(args, summary, f"restored {summary.count} documents and {summary.uploads} uploads from "
                                   f"{summary.folder}", "count and checksum verified,")


def _summary(args, summary: BackupSummary, what: str, checked: str) -> int:
    print(f"{what} in {summary.seconds:.1f} s; {checked} {summary.checksum[:16]}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.as_json(), ensure_ascii=False))
    return 0


def _serve(args) -> int:
    """Become gunicorn with the package's settings (backend/gunicorn_conf.py) and the app factory."""
    if args.bind:
        os.environ["GUNICORN_BIND"] = args.bind
    if args.workers:
        os.environ["GUNICORN_WORKERS"] = str(args.workers)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:backend.gunicorn_conf",
                              "backend:create_app()"])


if __name__ == "__main__":
    sys.exit(main())
