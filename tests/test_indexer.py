"""The indexer: incremental and idempotent runs, tags, bad files, resume after kill, the command line.

In-process tests use the real Indexer with the fast (untrained, 64 px) network; command-line tests run
`python -m indexer` as a real subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from backend.imaging import Limits
from backend.ingest import Indexer
from backend.stores.embedded import EmbeddedStore
from indexer.scan import read_tags_csv, scan

from .conftest import ROOT, picture


def cli(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore(tmp_path / "store" / "index.sqlite3")
    yield s
    s.close()


def run(store, fast_extractor, root: Path, prune=False, **scan_options):
    indexer = Indexer(store, fast_extractor, Limits(), batch_size=4)
    failures: list = []
    files = scan([root], problems=failures, **scan_options)
    return indexer.run(files, prune_under=[root] if prune else (), failures=failures)


def test_incremental_runs(store, fast_extractor, image_folder):
    first = run(store, fast_extractor, image_folder, tags_from_folders=True)
    assert (first.indexed, first.skipped, first.failed) == (12, 0, 0)
    again = run(store, fast_extractor, image_folder, tags_from_folders=True)
    assert (again.indexed, again.skipped) == (0, 12)

    picture(100).save(image_folder / "cats" / "new.jpg")                  # added
    picture(101).save(image_folder / "dogs" / "photo_2.jpg")              # changed content
    (image_folder / "cats" / "photo_1.jpg").unlink()                      # deleted
    before = store.get(scan_one(image_folder / "dogs" / "photo_2.jpg").id)
    third = run(store, fast_extractor, image_folder, tags_from_folders=True, prune=True)
    assert (third.indexed, third.reused, third.skipped, third.pruned) == (2, 0, 10, 1)
    after = store.get(scan_one(image_folder / "dogs" / "photo_2.jpg").id)
    assert after.content_hash != before.content_hash
    assert store.count() == 12
    assert sorted(store.tag_counts()) == [("cats", 6), ("dogs", 6)]


def scan_one(path: Path):
    return next(scan([path]))


def test_touched_copied_and_retagged_files_reuse_their_vectors(store, fast_extractor, image_folder):
    run(store, fast_extractor, image_folder, tags_from_folders=True)
    target = image_folder / "dogs" / "photo_0.png"
    os.utime(target, (time.time() + 100, time.time() + 100))              # same bytes, new mtime
    shutil.copy(image_folder / "cats" / "photo_1.jpg", image_folder / "copy.jpg")
    summary = run(store, fast_extractor, image_folder, tags_from_folders=True)
    assert (summary.indexed, summary.reused) == (2, 2)                    # no model call for either

    csv = image_folder / "tags.csv"
    csv.write_text("path,tags\ncats/photo_1.jpg,tabby;Indoor\n", encoding="utf-8")
    summary = run(store, fast_extractor, image_folder, tags_from_folders=True, csv_tags=read_tags_csv(csv))
    assert (summary.indexed, summary.reused) == (1, 1)
    assert store.get(scan_one(image_folder / "cats" / "photo_1.jpg").id).tags == ["cats", "indoor", "tabby"]


def test_bad_files_are_reported_and_skipped(store, fast_extractor, image_folder):
    (image_folder / "empty.jpg").write_bytes(b"")
    (image_folder / "notes.png").write_text("not an image")
    good = (image_folder / "cats" / "photo_1.jpg").read_bytes()
    (image_folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.new("L", (12000, 12000)).save(image_folder / "bomb.png")
    picture(5).convert("CMYK").save(image_folder / "cmyk.jpg")
    picture(6).save(image_folder / "東京 café.webp")
    picture(7).save(image_folder / "IMG_0001.HEIC")                      # an iPhone's default
    picture(8).save(image_folder / "still.avif")
    (image_folder / "readme.txt").write_text("ignored: not an image extension")
    indexer = Indexer(store, fast_extractor, Limits(max_pixels=50_000_000 // 2), batch_size=4)
    summary = indexer.run(scan([image_folder]))
    reasons = dict((Path(p).name, r) for p, r in summary.failures)
    assert set(reasons) == {"empty.jpg", "notes.png", "truncated.jpg", "bomb.png"}
    assert reasons["bomb.png"].endswith("144,000,000 pixels is over the limit of 25,000,000")
    assert summary.indexed == 16                                    # 12 + cmyk + unicode name + HEIC + AVIF
    assert store.keyword("東京").total == 1


def test_files_run_through_the_model_in_batches(store, fast_extractor, image_folder):
    calls = []
    original = fast_extractor._forward
    fast_extractor._forward = lambda batch: calls.append(len(batch)) or original(batch)
    try:
        run(store, fast_extractor, image_folder)
    finally:
        fast_extractor._forward = original
    assert sum(calls) == 12 and max(calls) > 1                             # not one call per image


def test_a_model_failure_in_a_batch_costs_only_its_file(store, fast_extractor, image_folder):
    Image.new("RGB", (96, 64), "white").save(image_folder / "cats" / "poison.png")
    original = fast_extractor._forward

    def forward(batch):   # the network fails on one picture (all white), as TensorFlow can on odd input
        if any(arr.min() == 255 for arr in batch):
            raise RuntimeError("the model cannot take this picture")
        return original(batch)
    fast_extractor._forward = forward
    try:
        summary = run(store, fast_extractor, image_folder)
    finally:
        fast_extractor._forward = original
    assert [Path(p).name for p, _ in summary.failures] == ["poison.png"]
    assert "the model failed on this image (the model cannot take this picture)" in summary.failures[0][1]
    assert summary.indexed == 12 and store.count() == 12        # its batch-mates are all stored


def test_cli_skips_a_file_the_decoder_does_not_implement_and_keeps_its_batch(fast_env, tmp_path):
    from benchmarks.odd_files import dds_unknown_dxgi, odd_files
    folder = tmp_path / "mixed"
    folder.mkdir()
    picture(1).save(folder / "a.jpg")
    (folder / "b.png").write_bytes(dds_unknown_dxgi())                 # a DDS named .png
    picture(2).save(folder / "c.jpg")
    (folder / "d.mpo").write_bytes(odd_files()["stereo.mpo"])
    (folder / "e.jpg").write_bytes(odd_files()["twelve-bit.jpg"])
    for _ in range(2):                                                 # a re-run does the same, no crash
        result = cli(fast_env, "index", str(folder), "--json")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        summary = last_json(result.stdout)
        assert summary["failed"] == 2 and summary["indexed"] + summary["skipped"] == 3
        reasons = {Path(f["path"]).name: f["reason"] for f in summary["failures"]}
        assert reasons["b.png"].startswith("DDS images are not accepted")
        assert reasons["e.jpg"] == "a JPEG image of a kind we cannot decode (cannot handle 12-bit layers)"
        assert "failed: " in result.stderr and "b.png" in result.stderr
    names = {r["filename"] for r in last_json(cli(fast_env, "search", "--text", "jpg mpo", "--json").stdout)["results"]}
    stats = last_json(cli(fast_env, "stats", "--json").stdout)
    assert stats["count"] == 3, names


# -- the command line -------------------------------------------------------------------------

def test_cli_index_is_idempotent_and_answers_in_json(fast_env, image_folder):
    first = cli(fast_env, "index", str(image_folder), "--tags-from-folders", "--tag", "Demo", "--json")
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["indexed"] == 12 and last_json(first.stdout)["failed"] == 0
    second = cli(fast_env, "index", str(image_folder), "--tags-from-folders", "--tag", "demo", "--json")
    summary = last_json(second.stdout)
    assert (summary["indexed"], summary["skipped"], summary["failed"]) == (0, 12, 0)

    stats = last_json(cli(fast_env, "stats", "--json").stdout)
    assert stats["count"] == 12 and stats["backend"] == "embedded"
    assert stats["descriptor"] == "vgg16-random-conv5-gem1.5-ar64-512d"
    assert stats["precision"] == "float32" and stats["precision_reason"] and stats["cpu"]   # what would run
    found = last_json(cli(fast_env, "search", "--text", "photo", "--tag", "cats", "--json").stdout)
    assert found["total"] == 6 and all("cats" in r["tags"] and "demo" in r["tags"] for r in found["results"])
    query = image_folder / "dogs" / "photo_4.jpg"
    similar = last_json(cli(fast_env, "search", "--image", str(query), "-k", "3", "--json").stdout)
    assert similar["results"][0]["path"] == str(query.resolve())          # the same network in every process
    assert similar["results"][0]["score"] > 0.999


def test_two_indexers_at_once_on_one_store(fast_env, tmp_path):
    """Concurrent writers: two command-line indexers fill one embedded store at the same time, over
    overlapping folders. SQLite takes their batches in turn; both finish, nothing is doubled or lost."""
    root = tmp_path / "many"
    for i in range(60):
        folder = root / f"set{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        picture(100 + i, size=(80, 60)).save(folder / f"p{i}.jpg", quality=90)
    command = [sys.executable, "-m", "indexer", "index", "--batch-size", "4", "--json"]
    procs = [subprocess.Popen(command + [str(root / a), str(root / b)], env=fast_env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a, b in (("set0", "set1"), ("set2", "set1"))]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        summary = last_json(out)
        assert summary["failed"] == 0 and summary["indexed"] + summary["skipped"] == 40
    stats = last_json(cli(fast_env, "stats", "--json").stdout)
    assert stats["count"] == 60
    again = last_json(cli(fast_env, "index", str(root), "--json").stdout)
    assert (again["indexed"], again["skipped"]) == (0, 60)
    store = EmbeddedStore(Path(fast_env["LOOKALIKE_DATA_DIR"]) / "index.sqlite3")
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_cli_fatal_errors_are_one_line(fast_env, image_folder, tmp_path):
    cases = [
        ({"LOOKALIKE_VGG16_WEIGHTS": str(tmp_path / "missing.h5")}, ["index", str(image_folder)], 1,
         "LOOKALIKE_VGG16_WEIGHTS"),
        ({"LOOKALIKE_STORE": "nonsense"}, ["stats"], 2, "LOOKALIKE_STORE"),
        ({"LOOKALIKE_BATCH_SIZE": "-3"}, ["stats"], 2, "LOOKALIKE_BATCH_SIZE"),
        ({}, ["index", str(tmp_path / "nowhere")], 2, "no such file or folder"),
        ({}, ["index", str(image_folder), "--shard", "5/2"], 2, "--shard"),
        ({}, ["search", "--image", str(tmp_path / "nowhere.jpg")], 2, "nowhere.jpg"),
        ({}, ["index", str(image_folder), "--batch-size", "0"], 2, "--batch-size"),
        ({}, ["index", str(image_folder), "--batch-size=-1"], 2, "--batch-size"),
        ({}, ["index", str(image_folder), "--tags-csv", str(tmp_path / "no.csv")], 2, "no such file"),
        ({}, ["search", "--text", "cats", "-k", "0"], 2, "-k"),
    ]
    nothing = cli(fast_env, "stats")                   # before anything made an index: it makes none
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: no index at")
    assert not Path(fast_env["LOOKALIKE_DATA_DIR"], "index.sqlite3").exists()
    for env, args, code, words in cases:
        result = cli({**fast_env, **env}, *args)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr
        assert "Traceback" not in result.stderr
    assert cli(fast_env, "index", str(image_folder)).returncode == 0
    empty = cli(fast_env, "search", "--text", "  ")
    assert (empty.returncode, empty.stderr.strip()) == (2, "error: --text needs at least one word")


def test_cli_reports_every_file_it_could_not_take_and_nothing_else(fast_env, image_folder):
    """Problems met while walking the folders are reported like decoding failures, and TensorFlow's
    start-up notices do not mix into the indexer's lines (the one line naming the model's precision)."""
    odd = os.fsencode(str(image_folder / "cats")) + b"/latin1-\xe9.jpg"
    with open(odd, "wb") as f:
        f.write((image_folder / "cats" / "photo_1.jpg").read_bytes())
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = cli(fast_env, "index", str(image_folder), "--json")
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["indexed"] == 12 and summary["failed"] == 2
    reasons = sorted((Path(f["path"]).name, f["reason"]) for f in summary["failures"])
    assert reasons[0][0] == "broken.jpg"
    assert reasons[1][0].startswith("latin1-") and reasons[1][1].startswith("file name is not valid UTF-8"), reasons
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["model", "failed", "failed"], result.stderr
    assert result.stderr.startswith("model: float32 (asked for")


def test_cli_rerun_without_tag_options_keeps_the_tags(fast_env, image_folder):
    assert cli(fast_env, "index", str(image_folder), "--tags-from-folders", "--tag", "pets").returncode == 0
    picture(77).save(image_folder / "cats" / "photo_1.jpg")          # changed content, same file
    plain = last_json(cli(fast_env, "index", str(image_folder), "--json").stdout)
    assert (plain["indexed"], plain["skipped"]) == (1, 11)          # only the changed file, not a re-tag
    tags = last_json(cli(fast_env, "search", "--text", "photo_1", "--json").stdout)["results"][0]["tags"]
    assert tags == ["cats", "pets"]
    # given again, tag options decide the tags
    retag = last_json(cli(fast_env, "index", str(image_folder), "--tag", "animals", "--json").stdout)
    assert retag["indexed"] == 12 and retag["reused"] == 12
    found = last_json(cli(fast_env, "search", "--text", "photo_1", "--json").stdout)["results"][0]["tags"]
    assert found == ["animals"]


def test_cli_remove_takes_documents_out_and_leaves_the_files(fast_env, image_folder):
    assert cli(fast_env, "index", str(image_folder), "--tags-from-folders").returncode == 0
    removed = cli(fast_env, "remove", str(image_folder / "cats"), "--json")
    assert removed.returncode == 0 and last_json(removed.stdout) == {"removed": 6, "count": 6}
    assert len(list((image_folder / "cats").iterdir())) == 6                # the files stay
    found = last_json(cli(fast_env, "search", "--text", "photo", "-k", "20", "--json").stdout)
    assert found["total"] == 6 and all(r["tags"] == ["dogs"] for r in found["results"])
    assert last_json(cli(fast_env, "remove", str(image_folder / "cats"), "--json").stdout)["removed"] == 0
    again = last_json(cli(fast_env, "index", str(image_folder), "--tags-from-folders", "--json").stdout)
    assert (again["indexed"], again["skipped"]) == (6, 6)


def test_cli_leaves_the_data_folder_out(fast_env, image_folder):
    """Indexing a folder that holds the data folder does not index its thumbnails and uploads again."""
    data = Path(fast_env["LOOKALIKE_DATA_DIR"])
    for sub in ("thumbnails", "uploads"):
        (data / sub).mkdir(parents=True)
        picture(90).save(data / sub / "cached.jpg")
    summary = last_json(cli(fast_env, "index", str(data.parent), "--json").stdout)
    assert summary["indexed"] == 12 and summary["failed"] == 0           # image_folder's 12 only


def test_cli_tags_csv_rows_that_name_no_image_are_reported(fast_env, image_folder):
    csv = image_folder / "tags.csv"
    csv.write_text("path,tags\ncats/photo_1.jpg,tabby\ncats/gone.jpg,lost\n", encoding="utf-8")
    result = cli(fast_env, "index", str(image_folder), "--tags-csv", str(csv))
    assert result.returncode == 0
    assert "1 rows of" in result.stderr and "gone.jpg" in result.stderr


def test_cli_refuses_to_mix_descriptors_and_keeps_the_index(fast_env, image_folder):
    assert cli(fast_env, "index", str(image_folder)).returncode == 0
    picture(50).save(image_folder / "later.jpg")
    mixed = cli({**fast_env, "LOOKALIKE_IMAGE_SIZE": "96"}, "index", str(image_folder))
    assert mixed.returncode == 1 and "ar64" in mixed.stderr and "Traceback" not in mixed.stderr
    assert last_json(cli(fast_env, "stats", "--json").stdout)["count"] == 12


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_cli_interrupted_run_resumes_without_duplicates(fast_env, tmp_path, how):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(240):
        picture(i, (72, 48)).save(root / f"img_{i:03d}.jpg")
    # Run from a background job (a CI script, nohup), this process may have SIGINT ignored, and a child
    # keeps an ignored signal ignored, Python too; a handler of ours is reset to the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "indexer", "index", str(root), "--batch-size", "4"],
                                env=fast_env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    db = Path(fast_env["LOOKALIKE_DATA_DIR"]) / "index.sqlite3"
    deadline, count = time.time() + 120, 0
    while time.time() < deadline and count < 8 and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            with EmbeddedStore(db) as store:
                count = store.count()
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=60)
    with EmbeddedStore(db) as store:
        interrupted = store.count()
    assert 8 <= interrupted < 240, f"the run should have been stopped part-way: {stderr[-2000:]}"
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again" in stderr and "Traceback" not in stderr
    resumed = cli(fast_env, "index", str(root), "--json")
    summary = last_json(resumed.stdout)
    assert summary["skipped"] == interrupted and summary["indexed"] == 240 - interrupted
    with EmbeddedStore(db) as store:
        entries = list(store.entries())
    assert len(entries) == 240 and len({e.path for e in entries}) == 240
