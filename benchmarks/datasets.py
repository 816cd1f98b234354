"""Labelled photo sets: a folder with a labels.csv of `path,label` (same class = relevant) or `path,group`
(same object = relevant); paths are relative to the folder. Extra columns are ignored; the header row is
optional and may use other names (`filename,class`, ...)."""
from __future__ import annotations

import csv
from pathlib import Path


def read_labels(folder: Path) -> dict[str, str]:
    """Absolute, resolved image path -> label, in file order. `folder` may also be the CSV file itself.
    Raises ValueError for a missing or malformed labels file, naming the problem."""
    csv_path = Path(folder) if Path(folder).is_file() else Path(folder) / "labels.csv"
    if not csv_path.is_file():
        raise ValueError(f"{csv_path} not found: a labelled set needs a labels.csv of path,label rows")
    labels: dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if rows and (rows[0][0].strip().lower() == "path" or not (csv_path.parent / rows[0][0].strip()).is_file()):
        rows = rows[1:]      # a header: the first row's first cell names no file
    for number, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{csv_path}: row {number} is not path,label: {row!r}")
        labels[str((csv_path.parent / row[0].strip()).resolve())] = row[1].strip()
    if not labels:
        raise ValueError(f"{csv_path} has no rows")
    return labels


def check_inputs(parser, weights: str, data: Path, sets) -> None:
    """Stop a benchmark's command line with one line when its weights or labelled sets are missing."""
    if weights not in ("imagenet", "random") and not Path(weights).is_file():
        parser.error(f"--weights {weights}: no such file (set LOOKALIKE_VGG16_WEIGHTS or --weights to the "
                     "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 file)")
    missing = [name for name in sets if not (Path(data) / name / "labels.csv").is_file()]
    if missing:
        parser.error(f"--data {data}: no {', '.join(f'{m}/labels.csv' for m in missing)} (set LOOKALIKE_SAMPLE_DATA "
                     "or --data to the folder holding the labelled sets)")
