"""Near-duplicate detection on a labelled set: the product's descriptor against perceptual hashes.

    python -m benchmarks.duplicates DATASET [--index DATA_DIR] [--threshold T] [--plot PNG] [--json]

DATASET is a folder with a labels.csv of `path,group[,edit,scene]` (benchmarks.duplicate_set builds one):
pictures sharing a group are the same picture; `edit` names how a copy was made (`original` for none);
pictures with the same `scene` and different groups are hard negatives (`ukbench:<object>` marks
UKBench's other views of one object).

The pictures are indexed by the product into a temporary embedded store (the indexer of `lookalike
index`, with the LOOKALIKE_* settings), or read from the store of an existing data folder (--index
DATA_DIR, as `lookalike index` left it; documents not in the set are ignored). In the same run every
picture gets imagehash's phash and dhash (64 bits).

Every method reports pairs. The product: pictures whose descriptor cosine is >= T are linked and links
are joined into groups (union-find), as a duplicate report does; every two members of a group are a
reported pair. The hashes: the same, with Hamming distance <= D. Printed: pairwise precision, recall and
F1 of groups (and of the bare links) along the product's threshold sweep and for the hashes at
distances 4 to 12, the number of reported pairs of different UKBench views and of same-class Corel
photos, and a table per edit at --threshold (pairs touching a copy made by that edit). --plot draws
precision against recall for all of them.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import read_labels

SWEEP = [round(0.80 + 0.005 * i, 3) for i in range(40)]        # 0.800 ... 0.995
FINDER_SWEEP = [round(0.60 + 0.02 * i, 3) for i in range(20)] + [0.99]   # 0.60 ... 0.98, 0.99
DISTANCES = list(range(0, 17))
REPORTED_DISTANCES = range(4, 13)
DEFAULT_THRESHOLD = 0.93


@dataclass(frozen=True)
class Picture:
    path: str           # absolute, resolved
    group: str
    edit: str
    scene: str


def read_set(folder: Path) -> list[Picture]:
    """The set's pictures in file order; `edit` and `scene` are optional columns."""
    groups = read_labels(folder)                 # validates the file and resolves the paths
    csv_path = Path(folder) if Path(folder).is_file() else Path(folder) / "labels.csv"
    extra: dict[str, tuple[str, str]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            if row.get("path"):
                path = str((csv_path.parent / row["path"].strip()).resolve())
                extra[path] = ((row.get("edit") or "").strip() or "unknown", (row.get("scene") or "").strip())
    return [Picture(path, group, *extra.get(path, ("unknown", ""))) for path, group in groups.items()]


# --- what each method computes per picture -------------------------------------------------------------

def product_vectors(pictures: list[Picture], data_dir: Path | None) -> tuple[np.ndarray, dict]:
    """The stored descriptor of every picture, in the set's order, and how they were obtained."""
    from backend.config import Settings
    from backend.factory import open_engine
    from backend.stores import open_store
    from backend.stores.embedded import EmbeddedStore
    from indexer.scan import scan

    if data_dir is not None:
        settings = Settings.from_env({**os.environ, "LOOKALIKE_DATA_DIR": str(data_dir)})
        with open_store(settings) as store:
            return _vectors_of(store, pictures), {"index": str(data_dir), "descriptor": store.descriptor()}
    settings = Settings.from_env(os.environ)
    problems: list[tuple[str, str]] = []
    files = list(scan([Path(p.path) for p in pictures], problems=problems))
    with tempfile.TemporaryDirectory(prefix="lookalike-duplicates-") as tmp, \
            open_engine(settings, store=EmbeddedStore(Path(tmp) / "index.sqlite3")) as engine:
        summary = engine.indexer.run(files, failures=problems)
        vectors = _vectors_of(engine.store, pictures)
        return vectors, {"index": None, "descriptor": engine.store.descriptor(),
                         "index_seconds": round(summary.seconds, 1), "indexed": summary.indexed}


def _vectors_of(store, pictures: list[Picture]) -> np.ndarray:
    ids = {entry.path: entry.id for entry in store.entries()}
    missing = [p.path for p in pictures if p.path not in ids]
    if missing:
        raise ValueError(f"{len(missing)} pictures of the set are not in the index, e.g. {missing[0]}")
    stored = store.vectors([ids[p.path] for p in pictures])
    return np.stack([stored[ids[p.path]] for p in pictures]).astype(np.float32)


def hashes(pictures: list[Picture], kind: str) -> np.ndarray:
    """imagehash's 64-bit `kind` hash (phash, dhash) of every picture, as uint64."""
    import imagehash
    from PIL import Image

    function = {"phash": imagehash.phash, "dhash": imagehash.dhash}[kind]
    out = np.empty(len(pictures), dtype=np.uint64)
    for i, picture in enumerate(pictures):
        with Image.open(picture.path) as im:
            bits = function(im).hash.flatten()
        out[i] = int("".join("1" if b else "0" for b in bits), 2)
    return out


def signatures(pictures: list[Picture]) -> list[bytes]:
    """The layout signature (backend.near_duplicates) of every picture, from its file."""
    from PIL import Image, ImageOps

    from backend.near_duplicates import signature

    out = []
    for picture in pictures:
        with Image.open(picture.path) as im:
            out.append(signature(ImageOps.exif_transpose(im).convert("RGB")))
    return out


def finder_pairs(vectors: np.ndarray, sigs: list[bytes], pictures: list[Picture]) -> tuple[np.ndarray, ...]:
    """The pairs the product's finder links, scored as it scores them, best first: each picture's best
    LINKS_PER_PICTURE neighbours of cosine >= CANDIDATE_FLOOR (backend.duplicates), scored by
    duplicates.near_score's rule (1 for the same bytes, else the signatures' check, the later picture's
    against the earlier ones as the indexer does) and kept from LINK_FLOOR. A cut at min_score then joins
    what a report at that min_score joins."""
    from backend.duplicates import CANDIDATE_FLOOR, LINK_FLOOR, LINKS_PER_PICTURE
    from backend.near_duplicates import similarities

    n, k = len(vectors), min(LINKS_PER_PICTURE, len(vectors) - 1)
    found: set[tuple[int, int]] = set()
    for start in range(0, n, 1024):
        sims = vectors[start:start + 1024] @ vectors.T
        sims[np.arange(len(sims)), start + np.arange(len(sims))] = -2.0       # not itself
        best = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k > 0 else np.empty((len(sims), 0), int)
        for row, columns in enumerate(best):
            for col in columns[sims[row, columns] >= CANDIDATE_FLOOR].tolist():
                found.add((min(start + row, col), max(start + row, col)))
    digests = [hashlib.sha256(Path(p.path).read_bytes()).digest() for p in pictures]
    earlier: dict[int, list[int]] = {}             # as the indexer links: each picture with those before it
    for a, b in sorted(found):
        earlier.setdefault(b, []).append(a)
    i, j, score = [], [], []
    for b, firsts in sorted(earlier.items()):
        checked = similarities(sigs[b], [sigs[a] for a in firsts])
        for a, value in zip(firsts, checked):
            value = 1.0 if digests[a] == digests[b] else value
            if value >= LINK_FLOOR:
                i.append(a)
                j.append(b)
                score.append(value)
    return _sorted(np.array(i, dtype=np.int64), np.array(j, dtype=np.int64), np.array(score), descending=True)


# --- candidate pairs, best first ------------------------------------------------------------------------

def cosine_pairs(vectors: np.ndarray, floor: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) of every pair i < j with cosine >= floor, highest first (vectors are L2-normalised)."""
    rows, cols, scores = [], [], []
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors.T
        i, j = np.nonzero(sims >= floor)
        keep = start + i < j
        rows.append(start + i[keep])
        cols.append(j[keep])
        scores.append(sims[i[keep], j[keep]])
    return _sorted(np.concatenate(rows), np.concatenate(cols), np.concatenate(scores), descending=True)


def hamming_pairs(codes: np.ndarray, ceiling: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every pair i < j with Hamming distance <= ceiling, closest first."""
    rows, cols, dists = [], [], []
    for start in range(0, len(codes), block):
        d = np.bitwise_count(codes[start:start + block, None] ^ codes[None, :])
        i, j = np.nonzero(d <= ceiling)
        keep = start + i < j
        rows.append(start + i[keep])
        cols.append(j[keep])
        dists.append(d[i[keep], j[keep]].astype(np.int64))
    return _sorted(np.concatenate(rows), np.concatenate(cols), np.concatenate(dists), descending=False)


def _sorted(i, j, s, descending):
    order = np.argsort(-s if descending else s, kind="stable")
    return i[order], j[order], s[order]


# --- pairwise scores along a sweep ----------------------------------------------------------------------

@dataclass
class Counts:
    reported: int = 0
    true: int = 0             # reported pairs of one group
    other_views: int = 0      # reported pairs of different UKBench views of one object
    same_class: int = 0       # reported pairs of different Corel photos of one class

    def scores(self, positives: int) -> dict:
        precision = self.true / self.reported if self.reported else 1.0
        recall = self.true / positives if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                "reported": self.reported, "other_views": self.other_views, "same_class": self.same_class}


class Labels:
    def __init__(self, pictures: list[Picture]):
        self.pictures = pictures
        self.group = _codes([p.group for p in pictures])
        self.scene = _codes([p.scene or f"none:{i}" for i, p in enumerate(pictures)])
        self.ukbench = np.array([p.scene.startswith("ukbench:") for p in pictures])
        self.group_ukbench = np.zeros(int(self.group.max()) + 1, dtype=bool)
        self.group_ukbench[self.group[self.ukbench]] = True
        sizes = Counter(self.group.tolist())
        self.positives = sum(n * (n - 1) // 2 for n in sizes.values())


def _codes(values: list[str]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def sweep(labels: Labels, pairs, cuts, descending: bool = True) -> list[tuple[dict, dict]]:
    """(groups, links) scores at each cut: the pairs whose score is >= the cut (descending: cosines) or
    <= it (distances). `pairs` come best first; one pass takes them strictest cut first."""
    i_all, j_all, s_all = pairs
    order = sorted(cuts, reverse=descending)      # strictest first: pairs are taken in score order
    parent = list(range(len(labels.pictures)))
    members: dict[int, tuple[Counter, Counter, Counter]] = {}   # root -> groups, scenes, ukbench scenes
    size = [1] * len(parent)
    groups_c, links_c = Counts(), Counts()
    results = {}
    k = 0

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def of(root):
        if root not in members:
            group, scene = int(labels.group[root]), int(labels.scene[root])
            members[root] = (Counter([group]), Counter([scene]), Counter([scene] if labels.ukbench[root] else []))
        return members[root]

    for cut in order:
        while k < len(s_all) and (s_all[k] >= cut if descending else s_all[k] <= cut):
            i, j = int(i_all[k]), int(j_all[k])
            same_group = bool(labels.group[i] == labels.group[j])
            same_scene = bool(labels.scene[i] == labels.scene[j])
            links_c.reported += 1
            links_c.true += same_group
            if same_scene and not same_group:
                links_c.other_views += bool(labels.ukbench[i])
                links_c.same_class += not bool(labels.ukbench[i])
            a, b = find(i), find(j)
            if a != b:
                if size[a] < size[b]:
                    a, b = b, a
                ga, sa, ua = of(a)
                gb, sb, ub = of(b)
                cross_group = sum(n * ga[g] for g, n in gb.items())
                cross_group_ukbench = sum(n * ga[g] for g, n in gb.items() if labels.group_ukbench[g])
                cross_scene = sum(n * sa[s] for s, n in sb.items())
                cross_ukbench = sum(n * ua[s] for s, n in ub.items())
                groups_c.reported += size[a] * size[b]
                groups_c.true += cross_group
                groups_c.other_views += cross_ukbench - cross_group_ukbench
                groups_c.same_class += (cross_scene - cross_ukbench) - (cross_group - cross_group_ukbench)
                ga.update(gb)
                sa.update(sb)
                ua.update(ub)
                members.pop(b, None)
                parent[b] = a
                size[a] += size[b]
            k += 1
        results[cut] = (groups_c.scores(labels.positives), links_c.scores(labels.positives))
    return [results[c] for c in cuts]


def components(n: int, pairs, cut, descending=True) -> list[list[int]]:
    """The groups (two members or more) that union-find makes of the pairs that pass `cut`."""
    i_all, j_all, s_all = pairs
    take = s_all >= cut if descending else s_all <= cut
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(i_all[take].tolist(), j_all[take].tolist()):
        a, b = find(i), find(j)
        if a != b:
            parent[b] = a
    out: dict[int, list[int]] = {}
    for x in range(n):
        out.setdefault(find(x), []).append(x)
    return [m for m in out.values() if len(m) > 1]


def per_edit(labels: Labels, groups: list[list[int]]) -> dict[str, dict]:
    """Per kind of edit: the scores over the pairs that touch a copy made by that edit."""
    edits = sorted({p.edit for p in labels.pictures} - {"original"})
    counts = {e: Counts() for e in edits}
    positives = Counter()
    by_group: dict[int, list[int]] = {}
    for x, g in enumerate(labels.group.tolist()):
        by_group.setdefault(g, []).append(x)
    for members in by_group.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                for e in _edits_of(labels, members[a], members[b]):
                    positives[e] += 1
    for members in groups:
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                x, y = members[a], members[b]
                same_group = bool(labels.group[x] == labels.group[y])
                for e in _edits_of(labels, x, y):
                    c = counts[e]
                    c.reported += 1
                    c.true += same_group
                    if not same_group and labels.scene[x] == labels.scene[y]:
                        c.other_views += bool(labels.ukbench[x])
                        c.same_class += not bool(labels.ukbench[x])
    return {e: {**counts[e].scores(positives[e]), "pairs": positives[e]} for e in edits}


def _edits_of(labels: Labels, x: int, y: int) -> set[str]:
    return {labels.pictures[z].edit for z in (x, y)} - {"original"}


# --- the run --------------------------------------------------------------------------------------------

def run(dataset: Path, data_dir: Path | None, threshold: float, plot: Path | None) -> dict:
    pictures = read_set(dataset)
    labels = Labels(pictures)
    started = time.perf_counter()
    vectors, how = product_vectors(pictures, data_dir)
    product_seconds = time.perf_counter() - started
    product = cosine_pairs(vectors, min(SWEEP + [threshold, 0.5]))
    cuts = sorted(set(SWEEP + [threshold]))
    product_sweep = dict(zip(cuts, sweep(labels, product, cuts)))
    result: dict = {"dataset": str(dataset), "pictures": len(pictures), "groups": len(set(labels.group.tolist())),
                    "positive_pairs": labels.positives, **how, "product_seconds": round(product_seconds, 1),
                    "threshold": threshold,
                    "product": [{"threshold": t, **g, "links": links} for t, (g, links) in product_sweep.items()]}
    product_groups = components(len(pictures), product, threshold)
    result["product_per_edit"] = per_edit(labels, product_groups)
    result["product_largest_group"] = max((len(m) for m in product_groups), default=0)
    from backend.duplicates import LINK_FLOOR, NEAR_MIN_SCORE
    started = time.perf_counter()
    sigs = signatures(pictures)
    result["signature_ms_per_picture"] = round(1000 * (time.perf_counter() - started) / len(pictures), 2)
    started = time.perf_counter()
    linked = finder_pairs(vectors, sigs, pictures)
    result["finder_pairs_seconds"] = round(time.perf_counter() - started, 1)
    cuts = [c for c in FINDER_SWEEP if c >= LINK_FLOOR]
    result["finder_default"] = NEAR_MIN_SCORE
    result["finder"] = [{"min_score": c, **g, "links": links}
                        for c, (g, links) in zip(cuts, sweep(labels, linked, cuts))]
    result["finder_per_edit"] = per_edit(labels, components(len(pictures), linked, NEAR_MIN_SCORE))
    for kind in ("phash", "dhash"):
        started = time.perf_counter()
        codes = hashes(pictures, kind)
        seconds = time.perf_counter() - started
        pairs = hamming_pairs(codes, max(DISTANCES))
        rows = sweep(labels, pairs, DISTANCES, descending=False)
        result[kind] = [{"distance": d, **g, "links": links} for d, (g, links) in zip(DISTANCES, rows)]
        result[f"{kind}_ms_per_picture"] = round(1000 * seconds / len(pictures), 2)
        best = max((r for r in result[kind] if r["distance"] in REPORTED_DISTANCES), key=lambda r: r["f1"])
        result[f"{kind}_best"] = best
        result[f"{kind}_per_edit"] = per_edit(labels, components(len(pictures), pairs, best["distance"],
                                                                 descending=False))
    result["choices"] = choices(result["product"])
    if plot is not None:
        draw(result, plot)
        result["plot"] = str(plot)
    return result


def score_report(dataset: Path, report: Path) -> dict:
    """How a duplicate report (`lookalike duplicates --json` saved to a file, its last line a JSON object)
    scores against the set's labels: pairwise precision, recall and F1 over the whole set, reported pairs of
    other UKBench views and same-class Corel photos, and the table per edit. Paths are matched resolved."""
    pictures = read_set(dataset)
    labels = Labels(pictures)
    index = {p.path: k for k, p in enumerate(pictures)}
    lines = [line for line in report.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{report} is empty: expected the output of `lookalike duplicates --json`")
    try:
        body = json.loads(lines[-1])
        groups = [[str(Path(m["path"]).resolve()) for m in g["members"]] for g in body["groups"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report} does not end with a duplicate report's JSON object ({exc})") from None
    outside = sum(path not in index for g in groups for path in g)
    members = [[index[path] for path in g if path in index] for g in groups]
    counts = Counts()
    for group in members:
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                x, y = group[a], group[b]
                same_group = bool(labels.group[x] == labels.group[y])
                counts.reported += 1
                counts.true += same_group
                if not same_group and labels.scene[x] == labels.scene[y]:
                    counts.other_views += bool(labels.ukbench[x])
                    counts.same_class += not bool(labels.ukbench[x])
    return {"dataset": str(dataset), "report": str(report), "pictures": len(pictures),
            "positive_pairs": labels.positives, "groups": len(groups), "not_in_set": outside,
            "min_score": body.get("min_score"), **counts.scores(labels.positives),
            "per_edit": per_edit(labels, [g for g in members if len(g) > 1])}


def choices(rows: list[dict]) -> dict:
    """The threshold of best F1, and the loosest one whose groups meet the precision target with no pair
    of different UKBench views."""
    best = max(rows, key=lambda r: (r["f1"], r["threshold"]))
    clean = [r for r in rows if r["precision"] >= 0.98 and r["other_views"] == 0]
    return {"best_f1": best["threshold"], "loosest_clean": min(clean, key=lambda r: r["threshold"])["threshold"]
            if clean else None}


def draw(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    product = result["product"]
    ax.plot([r["recall"] for r in product], [r["precision"] for r in product], "-o", ms=3, color="C0",
            label="lookalike descriptor cosine, groups")
    ax.plot([r["links"]["recall"] for r in product], [r["links"]["precision"] for r in product], ":", color="C0",
            label="lookalike descriptor cosine, links only")
    finder = result.get("finder", [])
    ax.plot([r["recall"] for r in finder], [r["precision"] for r in finder], "-^", ms=3, color="C3",
            label="lookalike finder: candidates by cosine, geometric check")
    for r in finder:
        if r["min_score"] in (0.8, 0.9, result.get("finder_default"), 0.99):
            ax.annotate(f"{r['min_score']:g}", (r["recall"], r["precision"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color="C3")
    for t in (0.85, 0.9, 0.95, result["threshold"]):
        r = next((r for r in product if r["threshold"] == t), None)
        if r:
            ax.annotate(f"{t:g}", (r["recall"], r["precision"]), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color="C0")
    for colour, kind in (("C1", "phash"), ("C2", "dhash")):
        rows = [r for r in result[kind] if r["distance"] in REPORTED_DISTANCES]
        ax.plot([r["recall"] for r in rows], [r["precision"] for r in rows], "-s", ms=3, color=colour,
                label=f"imagehash {kind}, Hamming 4-12")
        for r in rows[::2]:
            ax.annotate(str(r["distance"]), (r["recall"], r["precision"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colour)
    ax.axhline(0.98, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("recall (pairs)")
    ax.set_ylabel("precision (pairs)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(f"Near duplicates: {result['pictures']} pictures, {result['positive_pairs']} duplicate pairs",
                 fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _line(name: str, r: dict) -> str:
    return (f"{name:<24} P {r['precision']:.4f}  R {r['recall']:.4f}  F1 {r['f1']:.4f}  pairs {r['reported']:>7}"
            f"  other views {r['other_views']:>5}  same class {r['same_class']:>6}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duplicates", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="a folder with pictures and labels.csv")
    parser.add_argument("--index", type=Path, metavar="DATA_DIR",
                        help="read the descriptors from this data folder's store instead of indexing")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"the product's cosine for the per-edit table (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="draw precision against recall")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="only score this saved `lookalike duplicates --json` output against the labels")
    args = parser.parse_args(argv)
    try:
        result = score_report(args.dataset, args.report) if args.report else \
            run(args.dataset, args.index, args.threshold, args.plot)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    if args.report:
        print(f"{result['report']} against {result['dataset']}: {result['groups']} groups, "
              f"{result['pictures']} pictures, {result['positive_pairs']} duplicate pairs "
              f"({result['not_in_set']} reported pictures not in the set)")
        print(_line("  report", result))
        for edit, r in result["per_edit"].items():
            print(f"  {edit:<11} {r['pairs']:>5}  P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f}")
        return 0
    print(f"{result['dataset']}: {result['pictures']} pictures, {result['groups']} groups, "
          f"{result['positive_pairs']} duplicate pairs; descriptor {result['descriptor']}")
    print("\nlookalike (descriptor cosine >= T; groups, then bare links):")
    for r in result["product"]:
        print(_line(f"  T {r['threshold']:.3f} groups", r))
        print(_line("            links", r["links"]))
    print(f"\nlookalike finder (candidates by cosine, scored by the geometric check; default "
          f"{result['finder_default']}), min_score S:")
    for r in result["finder"]:
        print(_line(f"  S {r['min_score']:.3f} groups", r))
    for kind in ("phash", "dhash"):
        print(f"\nimagehash {kind} ({result[f'{kind}_ms_per_picture']} ms a picture), Hamming distance <= D:")
        for r in result[kind]:
            if r["distance"] in REPORTED_DISTANCES:
                print(_line(f"  D {r['distance']:>2} groups", r))
    print(f"\nper edit, the finder at its default {result['finder_default']} | "
          f"lookalike cosine at T {result['threshold']} | phash at D {result['phash_best']['distance']} | "
          f"dhash at D {result['dhash_best']['distance']} (precision recall F1; pairs touching such a copy):")
    for edit, r in result["product_per_edit"].items():
        cells = [result["finder_per_edit"][edit], r, result["phash_per_edit"][edit], result["dhash_per_edit"][edit]]
        print(f"  {edit:<11} {r['pairs']:>5}  " + "  |  ".join(
            f"{c['precision']:.3f} {c['recall']:.3f} {c['f1']:.3f}" for c in cells))
    print(f"\nbest F1 at T {result['choices']['best_f1']}; loosest T with precision >= 0.98 and no UKBench "
          f"other-view pair: {result['choices']['loosest_clean']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
