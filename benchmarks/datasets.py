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
