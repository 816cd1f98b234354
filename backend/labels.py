"""Content labels: which ImageNet classes a picture shows, and which words find them.

The classifier (classifier.py) gives 1000 class probabilities; a picture keeps its `KEEP` most likely
classes whose probability reaches `THRESHOLD` (both chosen on Corel-1k, docs/benchmarks.md, "Content
labels"). The table `data/imagenet_labels.tsv` (written once from WordNet 3.0 by scripts/label_table.py)
gives each class its label and its terms: its own names and those of every WordNet hypernym, singular and
plural, as search words ("golden retriever" has "dog", "dogs", "retriever", "mammal", ...).

A keyword query finds a label when its words, joined, are one of the label's terms: "dog" finds every
breed, "vehicle" buses and cars, "flower" daisies; "hot" finds no hot dog. Both stores keep a document's
labels (a few rows), and a query is turned into the labels that have its term (`labels_for`): the
documents holding any of them, scored by the most confident of those labels, best first.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from .stores.base import Label, search_words

# Chosen on Corel-1k (docs/benchmarks.md, "Content labels"): at most this many labels a picture, each at
# least this probable.
KEEP = 5
THRESHOLD = 0.02


@lru_cache(maxsize=1)
def table() -> tuple[list[str], list[frozenset[str]]]:
    """(label of each class, terms of each class), in the classifier's output order."""
    names, terms = [], []
    text = resources.files("backend").joinpath("data/imagenet_labels.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        _index, _offset, name, words = line.split("\t")
        names.append(name)
        terms.append(frozenset(words.split("|")))
    return names, terms


@lru_cache(maxsize=1)
def _terms_by_label() -> dict[str, frozenset[str]]:
    names, terms = table()
    return dict(zip(names, terms))


def top_labels(probabilities: np.ndarray, keep: int = KEEP, threshold: float = THRESHOLD) -> list[Label]:
    """The `keep` most likely classes of one picture whose probability reaches `threshold`, best first."""
    names, _ = table()
    best = np.argsort(-probabilities, kind="stable")[:keep]
    return [Label(names[i], float(probabilities[i])) for i in best if probabilities[i] >= threshold]


def terms_of(name: str) -> frozenset[str]:
    """The search terms of a label (an unknown name: its own words only)."""
    known = _terms_by_label().get(name)
    return known if known is not None else frozenset({query_term(name)} - {""})


@lru_cache(maxsize=4096)
def labels_for(term: str) -> tuple[str, ...]:
    """The labels that a query term names (the label itself, or a broader word for it), sorted."""
    names, terms = table()
    return tuple(sorted(name for name, words in zip(names, terms) if term in words))


def query_term(text: str) -> str:
    """A keyword query as a label term: its search words, joined by single spaces."""
    return " ".join(search_words(text))


def matching_label(labels: list[Label] | None, term: str) -> Label | None:
    """The most confident of the labels that the term names."""
    found = [label for label in labels or () if term in terms_of(label.name)]
    return max(found, key=lambda label: label.confidence) if found else None
