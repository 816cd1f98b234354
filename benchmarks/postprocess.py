"""Post-processing study on cached descriptors (from benchmarks.descriptors): PCA to fewer dimensions,
with or without whitening, learned on the OTHER set; and query expansion (average QE and alpha-QE).

    python -m benchmarks.postprocess [--size ar448] [--pooling gem] [--cache /tmp/lookalike-descriptors]
        [--sets corel1k ukbench-600]

Every figure is the mAP (query left out) and, for UKBench, the N-S score, on all images of each set.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backend.features import l2_normalise

from .descriptors import load
from .metrics import evaluate_vectors


def learn_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvectors as columns, eigenvalues), largest first."""
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(values)[::-1]
    return mean, vectors[:, order], np.maximum(values[order], 0)


def apply_pca(x, pca, dims: int, whiten: bool) -> np.ndarray:
    mean, vectors, values = pca
    y = (x - mean) @ vectors[:, :dims]
    if whiten:
        y /= np.sqrt(values[:dims] + 1e-9 * values[0])
    return l2_normalise(y)


def expand_queries(vectors: np.ndarray, k: int, alpha: float = 0.0) -> np.ndarray:
    """Query expansion: each query plus its top-k neighbours (itself excluded), weighted by similarity**alpha
    (alpha 0 = average QE, Chum et al. 2007; alpha 3 = alpha-QE, Radenovic et al. 2018)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    weights = np.take_along_axis(sims, top, axis=1).clip(min=0) ** alpha
    return l2_normalise(vectors + np.einsum("nk,nkd->nd", weights, vectors[top]))


def _cell(m: dict) -> str:
    return f"{m['mAP']:.3f}" + (f" / {m['N-S']:.2f}" if "N-S" in m else "")


def study(sets: dict[str, dict], pooling: str) -> str:
    names = list(sets)
    x = {n: sets[n][pooling] for n in names}
    y = {n: sets[n]["labels"] for n in names}
    other = {n: next(o for o in names if o != n) for n in names}
    pca = {n: learn_pca(x[n]) for n in names}
    rows: list[tuple[str, list[str]]] = [("none (512-d)", [_cell(evaluate_vectors(x[n], y[n])) for n in names])]
    for whiten in (False, True):
        for dims in (512, 256, 128, 64):
            if dims == 512 and not whiten:
                continue  # a rotation plus centring: same ranking up to the centring
            label = f"PCA{'-whitening' if whiten else ''} {dims}-d, learned on the other set"
            rows.append((label, [_cell(evaluate_vectors(apply_pca(x[n], pca[other[n]], dims, whiten), y[n]))
                                 for n in names]))
    rows.append(("PCA-whitening 512-d, learned on the SAME set",
                 [_cell(evaluate_vectors(apply_pca(x[n], pca[n], 512, True), y[n])) for n in names]))
    for alpha in (0.0, 3.0):
        for k in (1, 2, 3, 5, 10):
            label = f"{'average' if alpha == 0 else 'alpha(3)'} QE, top {k}"
            rows.append((label, [_cell(evaluate_vectors(x[n], y[n], queries=expand_queries(x[n], k, alpha)))
                                 for n in names]))
    head = "| post-processing | " + " | ".join(f"{n} mAP" + (" / N-S" if n.startswith("ukbench") else "")
                                                for n in names) + " |"
    return "\n".join([head, "|---|" + "---|" * len(names)] + [f"| {r} | " + " | ".join(c) + " |" for r, c in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="ar448")
    parser.add_argument("--pooling", default="gem", help="avg, max, gem, rmac or 'gem p=P'")
    parser.add_argument("--sets", nargs=2, default=["corel1k", "ukbench-600"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-descriptors"))
    args = parser.parse_args(argv)
    gem_ps = (float(args.pooling.split("=")[1]),) if args.pooling.startswith("gem p=") else ()
    sets = {n: load(args.cache / f"{n}-{args.size}.npz", gem_ps) for n in args.sets}
    print(f"{args.pooling}, {args.size}:\n" + study(sets, args.pooling))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
