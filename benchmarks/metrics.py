"""Retrieval metrics on ranked lists of hits (True where the result is relevant to the query).

Conventions: the query itself is left out of its ranking for mAP, P@k, recall@k and nDCG@k; the UKBench
N-S score counts the relevant images among the top 4 of a ranking that includes the query (so a perfect
score is 4), as in Nister & Stewenius (2006).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def average_precision(hits: Sequence[bool], n_relevant: int) -> float:
    """Mean of the precision at the rank of each relevant item; relevant items missing from the
    ranking count as zero."""
    if n_relevant <= 0:
        return 0.0
    hits = np.asarray(hits, dtype=bool)
    ranks = np.flatnonzero(hits) + 1                      # 1-based ranks of the relevant items
    return float(np.sum(np.arange(1, len(ranks) + 1) / ranks) / n_relevant)


def precision_at(hits: Sequence[bool], k: int) -> float:
    return float(np.sum(np.asarray(hits[:k], dtype=bool)) / k)


def recall_at(hits: Sequence[bool], k: int, n_relevant: int) -> float:
    return float(np.sum(np.asarray(hits[:k], dtype=bool)) / n_relevant) if n_relevant else 0.0


def ndcg_at(hits: Sequence[bool], k: int, n_relevant: int) -> float:
    """Binary-gain nDCG: DCG of the ranking over the DCG of an ideal one with n_relevant relevant items."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.asarray(hits[:k], dtype=float)
    ideal = discounts[:min(k, n_relevant)].sum()
    return float((gains * discounts[:len(gains)]).sum() / ideal) if ideal else 0.0


def ns_score(hits_with_query: Sequence[bool]) -> int:
    """How many of the top 4 (the query included) are relevant: 0 to 4."""
    return int(np.sum(np.asarray(hits_with_query[:4], dtype=bool)))


def summarise(rankings: Sequence[tuple[Sequence[bool], int]],
              ranked_with_query: Sequence[Sequence[bool]] | None = None) -> dict:
    """Means over queries. rankings: (hits without the query, number of relevant items other than the
    query) per query; ranked_with_query: hits of the rankings that include the query (for N-S). Queries
    with nothing relevant to find (a label with one image) cannot be scored and are left out."""
    if ranked_with_query is not None:
        ranked_with_query = [w for w, (_, n) in zip(ranked_with_query, rankings) if n > 0]
    rankings = [(h, n) for h, n in rankings if n > 0]
    if not rankings:
        raise ValueError("no query has another image of its label: nothing to evaluate")
    out = {
        "queries": len(rankings),
        "mAP": float(np.mean([average_precision(h, n) for h, n in rankings])),
        "P@1": float(np.mean([precision_at(h, 1) for h, _ in rankings])),
        "P@10": float(np.mean([precision_at(h, 10) for h, _ in rankings])),
        "recall@100": float(np.mean([recall_at(h, 100, n) for h, n in rankings])),
        "nDCG@10": float(np.mean([ndcg_at(h, 10, n) for h, n in rankings])),
    }
    if ranked_with_query is not None:
        out["N-S"] = float(np.mean([ns_score(h) for h in ranked_with_query]))
    return out


def groups_of_four(labels: Sequence) -> bool:
    """True when every label has exactly 4 images (a UKBench-style set, where N-S applies)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return bool(len(counts)) and bool(np.all(counts == 4))


def evaluate_vectors(vectors: np.ndarray, labels: Sequence, ns: bool | None = None,
                     queries: np.ndarray | None = None) -> dict:
    """Every item queried against all the others by cosine similarity (rows L2-normalised), in memory:
    for descriptor studies that do not need a store. queries: row i replaces item i as the query (query
    expansion); ns: report N-S (default: when groups are of 4)."""
    labels = np.asarray(labels)
    sims = (vectors if queries is None else queries) @ vectors.T
    np.fill_diagonal(sims, np.inf)                        # the query first: dropped, or kept for N-S
    order = np.argsort(-sims, axis=1, kind="stable")
    same = labels[order] == labels[:, None]
    counts = {label: n for label, n in zip(*np.unique(labels, return_counts=True))}
    rankings = [(same[i, 1:], counts[labels[i]] - 1) for i in range(len(labels))]
    if ns is None:
        ns = groups_of_four(labels)
    return summarise(rankings, [same[i] for i in range(len(labels))] if ns else None)
