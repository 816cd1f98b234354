"""Relevance feedback: "more like these, less like those", from the vectors of marked images.

Three methods were measured with a simulated user (benchmarks/feedback.py, figures in docs/benchmarks.md):

- rocchio: one query vector, the mean of the positives minus GAMMA times the mean of the negatives,
  renormalised, searched by kNN as any other vector;
- fusion: candidates from that vector's kNN, re-ranked by their best similarity to any positive minus
  LAMBDA times their best similarity to any negative;
- classifier: candidates from that vector's kNN, re-ranked by a linear classifier (L2-regularised logistic
  regression) trained on the spot: positives against the negatives and pseudo-negatives (the documents
  least like the query, from a kNN of its opposite).

The product uses METHOD. Every function takes L2-normalised rows and is pure numpy.
"""
from __future__ import annotations

import numpy as np

from .features import l2_normalise

METHODS = ("rocchio", "fusion", "classifier")
METHOD = "rocchio"
GAMMA = 0.5                 # weight of the negatives' mean in the Rocchio vector
LAMBDA = 0.5                # weight of the nearest negative in score fusion
CANDIDATES = 300            # how many of the Rocchio vector's neighbours a re-ranking method scores
PSEUDO_NEGATIVES = 50       # documents least like the query, as extra negatives for the classifier
MAX_MARKED = 50             # positive and negative ids together, per request


def rocchio(positives: np.ndarray, negatives: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """The mean of the positives minus gamma times the mean of the negatives, as a unit vector."""
    query = positives.mean(axis=0)
    if len(negatives):
        query = query - gamma * negatives.mean(axis=0)
    norm = np.linalg.norm(query)
    if not norm > 1e-6:       # the negatives cancel the positives exactly: fall back on the positives
        query = positives.mean(axis=0)
    return l2_normalise(query[None, :].astype(np.float32))[0]


def fusion_scores(candidates: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                  lam: float = LAMBDA) -> np.ndarray:
    """The best similarity to a positive minus lam times the best similarity to a negative."""
    scores = (candidates @ positives.T).max(axis=1)
    if len(negatives):
        scores = scores - lam * (candidates @ negatives.T).max(axis=1)
    return scores


def classifier_scores(candidates: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                      l2: float = 0.01, steps: int = 200) -> np.ndarray:
    """Decision values of a logistic regression trained on positives (1) against negatives (0), each
    class weighted to half of the loss, by gradient descent (a convex problem: it converges)."""
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    weight = np.where(y == 1, 0.5 / len(positives), 0.5 / max(1, len(negatives)))
    w, b = np.zeros(x.shape[1]), 0.0
    rate = 4.0                # rows are unit vectors: the loss is smooth with a constant below 1
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = weight * (p - y)
        w -= rate * (x.T @ g + l2 * w)
        b -= rate * g.sum()
    return candidates @ w + b
