"""The near-duplicate set builder and benchmark: seeded sets, honest pair counts, the documented command."""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import duplicate_set
from benchmarks.duplicates import Labels, Picture, components, cosine_pairs, hamming_pairs, per_edit, sweep

from .conftest import NO_DATA, ROOT, picture, sample_data


def rows_of(folder):
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_set_is_seeded_labelled_and_halves_are_disjoint(tmp_path):
    data = sample_data()
    if data is None:
        pytest.skip(NO_DATA)
    a, again, other = tmp_path / "a", tmp_path / "again", tmp_path / "other"
    assert duplicate_set.main([str(a), "--seed", "1", "--limit", "8", "--data", str(data)]) == 0
    assert duplicate_set.main([str(again), "--seed", "1", "--limit", "8", "--data", str(data)]) == 0
    assert duplicate_set.main([str(other), "--seed", "2", "--limit", "8", "--data", str(data)]) == 0
    rows = rows_of(a)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    for members in groups.values():     # the original (byte for byte) and two copies by different edits
        edits = [m["edit"] for m in members]
        assert len(members) == 3 and edits[0] == "original" and len(set(edits)) == 3
        assert set(edits[1:]) <= set(duplicate_set.EDITS)
        assert digest(a / members[0]["path"]) == digest(data / members[0]["path"])
    ukbench = [r for r in rows if r["scene"].startswith("ukbench:") and r["edit"] == "original"]
    assert ukbench and all(n == 4 for n in np.unique([r["scene"] for r in ukbench], return_counts=True)[1])
    assert any(r["scene"].startswith("corel:") for r in rows)
    # the same seed gives the same files; another seed other edits or parameters
    assert [(r["path"], digest(a / r["path"])) for r in rows] == [(r["path"], digest(again / r["path"]))
                                                                  for r in rows_of(again)]
    assert [(r["path"], digest(a / r["path"])) for r in rows] != [(r["path"], digest(other / r["path"]))
                                                                  for r in rows_of(other)]
    even, odd = tmp_path / "even", tmp_path / "odd"
    duplicate_set.main([str(even), "--limit", "8", "--half", "even", "--data", str(data)])
    duplicate_set.main([str(odd), "--limit", "8", "--half", "odd", "--data", str(data)])
    assert not {r["group"] for r in rows_of(even)} & {r["group"] for r in rows_of(odd)}


def test_set_is_never_written_into_the_photo_folder(tmp_path, capsys):
    data = tmp_path / "data"
    for name in duplicate_set.SETS:
        (data / name).mkdir(parents=True)
        (data / name / "labels.csv").write_text("path,label\n")
    with pytest.raises(SystemExit) as stop:
        duplicate_set.main([str(data / "corel1k" / "copies"), "--data", str(data)])
    assert stop.value.code == 2 and "outside the photo folder" in capsys.readouterr().err
    assert not (data / "corel1k" / "copies").exists()


def small_labels():
    rng = np.random.default_rng(0)
    pictures = []
    for g in range(30):
        scene = f"ukbench:{g // 4}" if g < 16 else f"corel:{g % 3}"
        for edit in ["original", "crop", "pad"][:rng.integers(1, 4)]:
            pictures.append(Picture(f"/set/{g}/{edit}", str(g), edit, scene))
    vectors = rng.normal(size=(len(pictures), 8)).astype(np.float32)
    return Labels(pictures), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(labels, members_lists):
    reported = true = other_views = same_class = 0
    for members in members_lists:
        for x, y in itertools.combinations(members, 2):
            a, b = labels.pictures[x], labels.pictures[y]
            reported += 1
            true += a.group == b.group
            if a.group != b.group and a.scene == b.scene:
                other_views += a.scene.startswith("ukbench:")
                same_class += a.scene.startswith("corel:")
    return reported, true, other_views, same_class


def test_sweep_counts_the_pairs_of_groups_and_links_as_enumeration_does():
    labels, vectors = small_labels()
    n = len(labels.pictures)
    pairs = cosine_pairs(vectors, -1.0, block=7)
    assert len(pairs[0]) == n * (n - 1) // 2 and np.all(np.diff(pairs[2]) <= 0)
    cuts = [0.2, 0.5, 0.7, 0.9]
    for cut, (groups, links) in zip(cuts, sweep(labels, pairs, cuts)):
        reported, true, other_views, same_class = brute_force(labels, components(n, pairs, cut))
        assert (groups["reported"], groups["other_views"], groups["same_class"]) == (reported, other_views,
                                                                                     same_class)
        assert groups["recall"] == round(true / labels.positives, 4)
        linked = [[int(i), int(j)] for i, j, s in zip(*pairs) if s >= cut]
        assert links["reported"] == len(linked) == brute_force(labels, linked)[0]
    codes = np.random.default_rng(1).integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    close = hamming_pairs(codes, 28, block=5)
    expected = sum(bin(int(codes[x]) ^ int(codes[y])).count("1") <= 28 for x, y in itertools.combinations(range(n), 2))
    assert len(close[0]) == expected and np.all(np.diff(close[2]) >= 0)
    (groups, _), = sweep(labels, close, [28], descending=False)
    assert groups["reported"] == brute_force(labels, components(n, close, 28, descending=False))[0]
    table = per_edit(labels, components(n, pairs, 0.5))
    assert set(table) == {"crop", "pad"} and all(0 <= row["precision"] <= 1 for row in table.values())


def test_duplicates_command_on_the_fast_descriptor(tmp_path, fast_env):
    folder = tmp_path / "set"
    folder.mkdir()
    rows = ["path,group,edit,scene"]
    rng = __import__("random").Random(3)
    for i in range(6):
        original = picture(i, size=(160, 120))
        original.save(folder / f"{i}.png")
        (folder / f"{i}.same.png").write_bytes((folder / f"{i}.png").read_bytes())   # the same bytes
        copy = duplicate_set.EDITS["crop"](original, rng)
        copy.image.save(folder / f"{i}.crop.jpg", copy.fmt, **copy.save)
        rows += [f"{i}.png,{i},original,s{i // 2}", f"{i}.same.png,{i},same,s{i // 2}",
                 f"{i}.crop.jpg,{i},crop,s{i // 2}"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    plot = tmp_path / "pr.png"
    result = subprocess.run([sys.executable, "-m", "benchmarks.duplicates", str(folder), "--plot", str(plot),
                             "--json"], env=fast_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["pictures"] == 18 and out["positive_pairs"] == 18 and out["indexed"] == 18
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same bytes give the same descriptor and hash: found at every threshold and distance
    assert out["product_per_edit"]["same"]["recall"] >= 0.5
    for row in out["product"]:
        assert row["recall"] >= 6 / 18 and 0 <= row["precision"] <= 1
    assert out["phash"][0]["distance"] == 0 and out["phash"][0]["recall"] >= 6 / 18
    assert [r["distance"] for r in out["dhash"]] == list(range(17))

    # the documented check of a report: the set indexed and reported by the product's commands, then scored
    from .test_indexer import cli
    assert cli(fast_env, "index", str(folder)).returncode == 0
    report = tmp_path / "report.txt"
    listed = cli(fast_env, "duplicates", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    report.write_text(listed.stdout)
    scored = subprocess.run([sys.executable, "-m", "benchmarks.duplicates", str(folder), "--report", str(report),
                             "--json"], env=fast_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert scored.returncode == 0, scored.stderr[-2000:]
    score = json.loads(scored.stdout)
    assert (score["pictures"], score["positive_pairs"], score["not_in_set"]) == (18, 18, 0)
    assert score["precision"] == 1.0 and score["recall"] >= 6 / 18          # every same-bytes pair at least
    assert score["reported"] == sum(len(g["members"]) * (len(g["members"]) - 1) // 2
                                    for g in json.loads(listed.stdout.strip().splitlines()[-1])["groups"])
    report.write_text("not a report\n")
    refused = subprocess.run([sys.executable, "-m", "benchmarks.duplicates", str(folder), "--report", str(report)],
                             env=fast_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
