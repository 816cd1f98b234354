"""Duplicates: which pictures of a collection are the same picture.

Two levels, one meaning each:
- `exact`: the same bytes (the documents share their content_hash).
- `near`: the same picture after edits (resized, recompressed, cropped a little, brighter, watermarked, ...):
  the pair's near score is at least `min_score` (default NEAR_MIN_SCORE, chosen by measurement:
  docs/benchmarks.md, "Duplicates"). Identical bytes are near duplicates too.

The near score of two pictures (`near_score`): 1 for the same bytes; else the geometric check of their
signatures (near_duplicates.py), for pictures whose search vectors are close enough to be candidates
(cosine >= CANDIDATE_FLOOR). The search vector finds the candidates, the signatures decide: the cosine
alone cannot tell an edited copy from another photo of the same scene. (A document without a signature, its
file unreadable when it was linked, is scored by the cosine of the vectors on the same scale, `cosine_score`.)

Why links: comparing every picture with every other is quadratic (100,000 pictures are 5e9 pairs). Instead,
each picture is compared once, when it is written, with its best candidates among the pictures already
stored (one kNN query) and with the rest of its batch; the pairs scoring at least LINK_FLOOR are kept with
the later picture as `NearLink`s (id, that picture's content hash, score). A report reads the links with
score >= min_score and joins them into groups (union-find): its cost grows with the number of duplicates,
not with the collection. A link stands while its far end still holds the content it was linked with, so
removing or re-indexing a picture needs no fix-up elsewhere; re-tagging keeps the links.

The keeper suggested for a group is the member with the most pixels, then the largest file, then the oldest.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import near_duplicates
from .stores.base import Document, Hit, NearLink, Page, Store
from .stores.filters import Filters, combined

EXACT, NEAR = "exact", "near"
LEVELS = (EXACT, NEAR)
CANDIDATE_FLOOR = 0.5       # the search vectors' cosine a pair needs to be compared at all
LINKS_PER_PICTURE = 20      # the candidates a new picture is compared with, and the links it keeps (300 copies
                            # still join: each links to earlier ones)
# Pairs scoring under this are not kept, so no report can ask for a lower min_score: well below the default,
# so a user can loosen the report.
LINK_FLOOR = 0.6
NEAR_MIN_SCORE = 0.8        # the default: no two views of one UKBench object and no two Corel photos of a class
                            # from 0.72 up; recall 0.94 (docs/benchmarks.md, "Near duplicates")
UNSIGNED_SLOPE = 40         # cosine_score: cosine 0.995, where the cosine alone reported no false pair in the
                            # benchmark, scores the default 0.8


def near_score(a: Document, b: Document, cosine: float) -> float:
    """How surely two candidate pictures are the same picture: 1 for the same bytes, else the geometric check
    of their signatures, else (a document without one) `cosine_score` of their vectors."""
    return near_scores(a, [(b, cosine)])[0]


def near_scores(doc: Document, candidates: Sequence[tuple[Document, float]]) -> list[float]:
    """`near_score` of a document with each (candidate, cosine): the signatures checked in one call, which
    prepares the document's own once."""
    scores = [1.0 if other.content_hash == doc.content_hash else cosine_score(cosine) for other, cosine in candidates]
    if near_duplicates.is_current(doc.signature):
        checked = [(k, other.signature) for k, (other, _) in enumerate(candidates)
                   if other.content_hash != doc.content_hash and near_duplicates.is_current(other.signature)]
        found = near_duplicates.similarities(doc.signature, [sig for _, sig in checked])
        for (k, _), score in zip(checked, found):
            scores[k] = score        # the cosine only proposed the pair
    return scores


def cosine_score(cosine: float) -> float:
    """A pair's near score from its vectors' cosine alone, for a document without a (current) signature: only
    vectors this close are surely one picture, since other shots of a scene reach cosine 0.99."""
    return max(0.0, min(1.0, 1.0 - UNSIGNED_SLOPE * (1.0 - cosine)))


# -- links, made when pictures are written ---------------------------------------------------------

def link(store: Store, docs: Sequence[Document]) -> None:
    """Set `near` on each document (which carries its vector): its partners scoring at least LINK_FLOOR among
    its best candidates in the store (one kNN query each, all in one call) and the earlier documents of the
    same batch."""
    docs = [doc for doc in docs if doc.vector is not None]
    if not docs:
        return
    batch_ids = [doc.id for doc in docs]
    vectors = np.stack([np.asarray(doc.vector, dtype=np.float32) for doc in docs])
    within = vectors @ vectors.T
    # the batch's own ids are left out: their stored versions (if any) are being replaced
    found = store.knn_many(vectors, descriptor=docs[0].descriptor, limit=LINKS_PER_PICTURE,
                           min_score=CANDIDATE_FLOOR, exclude=batch_ids)
    for i, doc in enumerate(docs):
        candidates = [(hit.document, hit.score) for hit in found[i]]
        candidates += [(docs[j], float(within[i, j])) for j in range(i)
                       if within[i, j] >= CANDIDATE_FLOOR and docs[j].id != doc.id]
        links: dict[str, NearLink] = {}
        for (other, _), score in zip(candidates, near_scores(doc, candidates)):
            score = round(score, 6)
            if score >= LINK_FLOOR:
                links[other.id] = NearLink(other.id, other.content_hash, score)
        doc.near = sorted(links.values(), key=lambda x: (-x.score, x.id))[:LINKS_PER_PICTURE]


# -- reports ---------------------------------------------------------------------------------------

@dataclass
class Member:
    document: Document
    score: float                # cosine with the group's keeper (1.0 for the keeper and for identical bytes)


@dataclass
class Group:
    members: list[Member]       # the suggested keeper first

    @property
    def keeper(self) -> Member:
        return self.members[0]


@dataclass
class Report:
    level: str
    min_score: float | None     # None for exact
    groups: list[Group]         # the page asked for, largest group first
    total: int                  # groups in all
    pictures: int               # pictures in all groups


class BadRequest(ValueError):
    """A level or min_score that cannot be answered (the message says why)."""


def check(level: str, min_score: float | None) -> float | None:
    """The min_score a report uses: None for exact; the default or the given one (>= LINK_FLOOR) for near."""
    if level not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)} (got {level!r})")
    if level == EXACT:
        if min_score is not None:
            raise BadRequest("min_score applies to level near only (exact means the same bytes)")
        return None
    if min_score is None:
        return NEAR_MIN_SCORE
    if not LINK_FLOOR <= min_score <= 1.0:
        raise BadRequest(f"min_score for near duplicates must be from {LINK_FLOOR} to 1 (got {min_score}): "
                         f"pairs under {LINK_FLOOR} are not kept")
    return min_score


class _Sets:
    """Union-find over ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent.setdefault(x, x)
        while parent != x:
            grand = self.parent[parent]
            self.parent[x] = grand      # path halving: a chain of 300 copies stays cheap
            x, parent = parent, self.parent.setdefault(grand, grand)
        return x

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return [sorted(ids) for ids in out.values() if len(ids) > 1]


def _components(store: Store, level: str, min_score: float | None) -> list[list[str]]:
    exact = store.exact_groups()
    if level == EXACT:
        return exact
    sets = _Sets()
    for ids in exact:               # identical bytes are near duplicates whatever the links say
        for other in ids[1:]:
            sets.join(ids[0], other)
    for a, b, _ in store.near_pairs(min_score or NEAR_MIN_SCORE):
        sets.join(a, b)
    return sets.groups()


def _matches(doc: Document, filters: Filters, under: Sequence[str]) -> bool:
    if not filters.matches(doc):
        return False
    return not under or any(doc.path == root or doc.path.startswith(root.rstrip("/") + "/") for root in under)


def keeper_order(doc: Document) -> tuple:
    """Most pixels, then the largest file, then the oldest; the path last, so the choice never wavers."""
    return (-doc.width * doc.height, -doc.bytes, doc.modified_at, doc.path)


def _groups(store: Store, members: list[list[Document]], level: str) -> list[Group]:
    """Each list of documents as a Group: the keeper first, the others by their near score with it. The
    vectors that documents without a signature are scored by are read in one call for all the groups."""
    ordered = [sorted(docs, key=keeper_order) for docs in members]
    vectors: dict[str, np.ndarray] = {}
    if level == NEAR:
        unsigned = {doc.id for docs in ordered for doc in docs if not near_duplicates.is_current(doc.signature)}
        wanted = unsigned | {docs[0].id for docs in ordered if unsigned.intersection(d.id for d in docs)}
        vectors = store.vectors(sorted(wanted)) if wanted else {}
    groups = []
    for docs in ordered:
        keeper, others = docs[0], docs[1:]
        if level == EXACT:
            scores = [1.0] * len(others)
        else:       # the keeper's signature checked against all the others' in one call
            base = vectors.get(keeper.id)
            scores = near_scores(keeper, [(doc, float(vectors[doc.id] @ base) if base is not None
                                           and doc.id in vectors else 1.0) for doc in others])
        groups.append(Group([Member(keeper, 1.0)] + sorted(
            (Member(doc, round(score, 6)) for doc, score in zip(others, scores)),
            key=lambda m: (-m.score, keeper_order(m.document)))))
    return groups


def find_groups(store: Store, *, level: str = NEAR, min_score: float | None = None, tags: Sequence[str] = (),
                under: Iterable[str | Path] = (), offset: int = 0, limit: int | None = None,
                filters: Filters | None = None) -> Report:
    """The duplicate groups of the store, largest first; a page of them with offset and limit. `tags` and
    `filters`: only members that meet them; `under`: only members whose files lie under one of these paths (a
    group keeps two or more such members, or is left out)."""
    min_score = check(level, min_score)
    filters = combined(filters, tags)
    roots = [str(Path(root).expanduser().resolve()) for root in under]
    components = _components(store, level, min_score)
    known: dict[str, Document] = {}
    if filters or roots:            # which members count depends on their metadata: read it for every group
        known = store.documents([i for ids in components for i in ids])
        components = [kept for kept in ([i for i in ids if i in known and _matches(known[i], filters, roots)]
                                        for ids in components) if len(kept) > 1]
    components.sort(key=lambda ids: (-len(ids), ids[0]))
    page = components[offset:None if limit is None else offset + limit]
    missing = [i for ids in page for i in ids if i not in known]
    known.update(store.documents(missing))
    present = [[known[i] for i in ids if i in known] for ids in page]    # one removed meanwhile is left out
    groups = _groups(store, [docs for docs in present if len(docs) > 1], level)
    return Report(level, min_score, groups, len(components), sum(len(ids) for ids in components))


def group_of(store: Store, doc_id: str, *, level: str = NEAR, min_score: float | None = None) -> Group | None:
    """The group of one picture (None when it has no duplicate), found by following its links outwards."""
    min_score = check(level, min_score)
    doc = store.get(doc_id)
    if doc is None:
        return None
    members = {doc.id} | {i for ids in store.exact_groups([doc.content_hash]) for i in ids}
    if level == NEAR:
        frontier = set(members)
        while frontier:
            reached = {x for a, b, _ in store.near_pairs(min_score or NEAR_MIN_SCORE, touching=sorted(frontier))
                       for x in (a, b)} - members
            if reached:             # and whatever shares their bytes, as in a report
                hashes = {d.content_hash for d in store.documents(sorted(reached)).values()}
                reached |= {i for ids in store.exact_groups(sorted(hashes)) for i in ids}
            frontier = reached - members
            members |= frontier
    if len(members) < 2:
        return None
    docs = list(store.documents(sorted(members)).values())
    return _groups(store, [docs], level)[0] if len(docs) > 1 else None


# -- folding search results ---------------------------------------------------------------------------

def fold(hits: Sequence[Hit], min_score: float = NEAR_MIN_SCORE) -> list[tuple[Hit, list[Hit]]]:
    """Search results with their near duplicates folded into the best-ranked of them: (hit, its copies) in
    rank order. Two results fold when they share their bytes or a stored link of at least min_score joins
    them (the links travel with the documents, so this needs no query)."""
    sets = _Sets()
    by_id = {hit.document.id: hit.document for hit in hits}
    by_content: dict[str, str] = {}
    for hit in hits:
        doc = hit.document
        sets.find(doc.id)
        if doc.content_hash in by_content:
            sets.join(by_content[doc.content_hash], doc.id)
        by_content.setdefault(doc.content_hash, doc.id)
        for link in doc.near or ():
            other = by_id.get(link.id)
            if other is not None and link.score >= min_score and other.content_hash == link.content_hash:
                sets.join(doc.id, link.id)
    folded: dict[str, tuple[Hit, list[Hit]]] = {}
    for hit in hits:                     # best first: the first of a group stands for it
        root = sets.find(hit.document.id)
        if root in folded:
            folded[root][1].append(hit)
        else:
            folded[root] = (hit, [])
    return list(folded.values())


def collapsed_page(search: Callable[[int, int], Page], offset: int, limit: int,
                   min_score: float = NEAR_MIN_SCORE, most: int = 2000) -> tuple[list[tuple[Hit, list[Hit]]], int]:
    """One page of folded results, offset and limit counting folded results: `search(offset, limit)` is asked
    for a window of ranked results, grown until it holds offset + limit groups or every match (at most `most`
    results). Returns the page and the number of matching documents."""
    window = min(most, max(3 * (offset + limit), 48))
    while True:
        found = search(0, window)
        groups = fold(found.hits, min_score)
        if len(groups) >= offset + limit or len(found.hits) < window or window >= most:
            return groups[offset:offset + limit], found.total
        window = min(most, window * 2)


# -- resolving: moving the other copies out of the way ------------------------------------------------

def move_aside(path: Path, folder: Path, root: Path | None) -> Path:
    """Move the file at `path` into `folder`, keeping its path relative to `root` (or its whole absolute path
    when no root holds it), never over an existing file: a taken name gets " (2)", " (3)", ... before its
    suffix. Returns where it went. Only the user's own request moves a file; nothing is ever deleted."""
    path = Path(path)
    relative = path.relative_to(root) if root is not None and path.is_relative_to(root) \
        else path.relative_to(path.anchor)
    target = Path(folder) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while True:
        try:
            _move_exclusive(path, candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")


def _move_exclusive(source: Path, target: Path) -> None:
    """Move without ever replacing `target` (rename would replace it silently): a hard link, then the
    old name removed; across file systems, an exclusive copy, then the old name removed."""
    try:
        os.link(source, target)             # FileExistsError when the name is taken
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        with open(source, "rb") as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, target)
    os.unlink(source)
