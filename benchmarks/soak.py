"""Soak: gunicorn under a long mixed load while pictures are indexed and removed beside it.

    python -m benchmarks.soak [--minutes 10] [--clients 4] [--workers 2] [--base 60] [--batches 16]
        [--batch-pictures 60] [--uploads 40] [--max-growth 0.10] [--image-searches N]
        [--warm-up-timeout 1200] [--fast] [--dir DIR] [--json]

It makes its own photos (distinct, of many sizes and formats), indexes --base of them with the real
command line, starts gunicorn (gunicorn.conf.py, backend:create_app(), --workers workers, on a free
loopback port), waits until every worker has logged the end of its model warm-up (one call at every
input shape, run in the background once a worker is ready), and then, for --minutes:

- --clients threads send a mix of searches by image (a new picture each time, of a random size and
  format, multipart or base64),
  keyword searches, "similar", file and thumbnail requests, and requests for deleted ids;
- an indexer thread runs `python -m indexer index` on up to --batches new folders of --batch-pictures
  photos each, and after each one from the second on `python -m indexer remove` on the oldest folder
  still indexed, spread over the run (at least two folders, whatever the time);
- a writer thread adds --uploads pictures with POST /api/images and deletes most of them again;
- a sampler reads each worker's resident memory every few seconds.

Required, or the exit status is 1: no 5xx, no connection error, the same worker processes at the end
as at the start, every search answer naming only ids that were indexed and none whose delete had
returned before the search was sent, deleted ids answering 404, the final set of documents exactly
what was added less what was removed, and each worker's mean resident memory in the last 10% of the
run within 10% (--max-growth) of the first 10%. It also reports each worker's memory after the first
200 searches by image and at the end. With --image-searches N the clients send only N searches by image
(no indexer, no uploads) and each worker's memory at the end must also be within --max-growth of its
memory after the first 200 (with --workers 1, all N go to one worker). Settings come from the
environment (LOOKALIKE_VGG16_WEIGHTS, ...); --fast uses the seeded untrained network at 64 px that the
tests use. Only loopback; every loop is bounded.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from backend.stores.base import document_id

from .server import ROOT, gunicorn

FAST_ENV = {"LOOKALIKE_VGG16_WEIGHTS": "random", "LOOKALIKE_IMAGE_SIZE": "64", "LOOKALIKE_POOLING": "gem",
            "LOOKALIKE_SQUARE": "false"}
KEY = "soak-key"
TIMEOUT = 120.0
SIZES = [(48, 32), (120, 90), (90, 120), (320, 240), (640, 427), (427, 640), (1024, 768), (1600, 900),
         (300, 300), (2000, 600)]


def photo(rng: random.Random, size: tuple[int, int] | None = None) -> Image.Image:
    """A distinct picture: noise under coloured blocks, of one of many sizes."""
    width, height = size or rng.choice(SIZES)
    gen = np.random.default_rng(rng.randrange(1 << 32))
    small = gen.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(img).copy()
    for _ in range(5):
        x, y = gen.integers(0, width), gen.integers(0, height)
        arr[y:y + height // 3, x:x + width // 3] = gen.integers(0, 255, 3)
    return Image.fromarray(arr)


def encoded(rng: random.Random, img: Image.Image) -> tuple[bytes, str]:
    fmt, ext = rng.choice([("JPEG", "jpg"), ("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 85} if fmt != "PNG" else {}))
    return out.getvalue(), ext


# What a search by image uploads: every format the API takes that Pillow writes, in several modes.
QUERY_FORMATS = [("JPEG", "jpg", "RGB"), ("JPEG", "jpg", "RGB"), ("JPEG", "jpg", "L"), ("PNG", "png", "RGB"),
                 ("PNG", "png", "RGBA"), ("PNG", "png", "P"), ("WEBP", "webp", "RGB"), ("GIF", "gif", "P"),
                 ("BMP", "bmp", "RGB"), ("TIFF", "tif", "RGB")]


def query_size(rng: random.Random) -> tuple[int, int]:
    """Any size from 32 px to about 3 Mpixels, aspect ratios 1:4 to 4:1: every input shape of the
    descriptor turns up (40 at 336 px), not only the few of a fixed list."""
    side = rng.randrange(32, 2400)
    other = max(16, min(2400, int(side * rng.uniform(0.25, 4.0))))
    return (side, other) if rng.random() < 0.5 else (other, side)


def query_picture(rng: random.Random) -> tuple[bytes, str]:
    """A new picture of a random size and format for a search by image."""
    img = photo(rng, query_size(rng))
    fmt, ext, mode = rng.choice(QUERY_FORMATS)
    out = io.BytesIO()
    img.convert(mode).save(out, fmt, **({"quality": rng.choice([60, 85, 95])} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue(), ext


def write_folder(folder: Path, count: int, rng: random.Random, prefix: str) -> list[str]:
    """count new photos in folder; their document ids."""
    folder.mkdir(parents=True)
    ids = []
    for i in range(count):
        data, ext = encoded(rng, photo(rng, rng.choice(SIZES[:7])))
        path = (folder / f"{prefix}_{i}.{ext}").resolve()
        path.write_bytes(data)
        ids.append(document_id(str(path)))
    return ids


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Record:
    """What happened, shared by the threads (appends and counter updates under one lock)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)         # by "kind status"
    problems: list[str] = field(default_factory=list)
    answers: list[tuple[float, list[str]]] = field(default_factory=list)   # (sent at, result ids)
    added: set[str] = field(default_factory=set)               # ids ever indexed or planned to be
    deleted_at: dict[str, float] = field(default_factory=dict)  # id -> when its delete returned
    image_searches: int = 0
    image_in_flight: int = 0                                   # --image-searches: sent, not yet answered
    warm_up: dict[int, dict] = field(default_factory=dict)     # pid -> shapes, seconds, memory before/after
    memory: list[tuple[float, dict[int, int]]] = field(default_factory=list)   # (t, {pid: KiB})
    at_200_images: dict[int, int] | None = None
    indexer_runs: list[dict] = field(default_factory=list)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class Soak:
    def __init__(self, args, workdir: Path, env: dict):
        self.args, self.workdir, self.env = args, workdir, env
        self.rng = random.Random(args.seed)
        self.rec = Record()
        self.stable: list[str] = []          # ids never deleted: targets of similar/file/thumbnail
        self.url = ""
        self.stop_at = 0.0
        self.started = 0.0

    # -- the load ----------------------------------------------------------------------------------

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < self.stop_at:
            if self.args.image_searches:
                with self.rec.lock:
                    if self.rec.image_searches + self.rec.image_in_flight >= self.args.image_searches:
                        return
                    self.rec.image_in_flight += 1
                kind = "image"
            else:
                kind = rng.choices(["image", "keyword", "similar", "file", "thumbnail", "deleted"],
                                   [3, 3, 3, 2, 2, 1])[0]
            sent = time.monotonic()
            try:
                self._one(session, rng, kind, sent)
            except requests.RequestException as exc:
                self.rec.problem(f"{kind}: connection error: {exc}")
                session = requests.Session()
                if self.args.image_searches:
                    with self.rec.lock:
                        self.rec.image_in_flight -= 1

    def _one(self, session: requests.Session, rng: random.Random, kind: str, sent: float) -> None:
        url, params = self.url, {"limit": rng.choice([5, 24, 100])}
        if kind == "image":
            data, ext = query_picture(rng)
            if rng.random() < 0.5:
                r = session.post(f"{url}/api/search/image", files={"image": (f"q.{ext}", data)}, params=params,
                                 timeout=TIMEOUT)
            else:
                r = session.post(f"{url}/api/search/image", json={"image_base64": base64.b64encode(data).decode(),
                                                                  **params}, timeout=TIMEOUT)
            with self.rec.lock:
                self.rec.image_searches += 1
                if self.args.image_searches:
                    self.rec.image_in_flight -= 1
        elif kind == "keyword":
            r = session.get(f"{url}/api/search", params={"q": rng.choice(["soak", "base", "batch", "upload", "b3"]),
                                                          **params}, timeout=TIMEOUT)
        elif kind == "similar":
            r = session.get(f"{url}/api/images/{rng.choice(self.stable)}/similar", params=params, timeout=TIMEOUT)
        elif kind in ("file", "thumbnail"):
            r = session.get(f"{url}/api/images/{rng.choice(self.stable)}/{kind}", timeout=TIMEOUT)
        else:
            with self.rec.lock:
                gone = list(self.rec.deleted_at)
            if not gone:
                return
            doc_id = rng.choice(gone)
            r = session.get(f"{url}/api/images/{doc_id}{rng.choice(['', '/file', '/thumbnail', '/similar'])}",
                            timeout=TIMEOUT)
            if r.status_code != 404:
                self.rec.problem(f"deleted id {doc_id} answered {r.status_code}")
        self._check(kind, r, sent)

    def _check(self, kind: str, r: requests.Response, sent: float) -> None:
        with self.rec.lock:
            self.rec.statuses[f"{kind} {r.status_code}"] += 1
        if r.status_code >= 500:
            self.rec.problem(f"{kind}: {r.status_code} {r.text[:200]}")
        elif kind in ("image", "keyword", "similar"):
            if r.status_code != 200:
                self.rec.problem(f"{kind}: {r.status_code} {r.text[:200]}")
                return
            ids = [hit["id"] for hit in r.json()["results"]]
            with self.rec.lock:
                self.rec.answers.append((sent, ids))
        elif kind in ("file", "thumbnail") and r.status_code != 200:
            self.rec.problem(f"{kind}: {r.status_code} {r.text[:200]}")

    def indexer(self) -> None:
        """Index new folders and remove about half of them again, spread over the run."""
        args, rng = self.args, random.Random(self.args.seed + 1)
        indexed: list[tuple[Path, list[str]]] = []
        for b in range(args.batches):
            if b >= 2 and time.monotonic() > self.stop_at - 5:   # the first two (an add and a remove) always
                break
            folder = self.workdir / "photos" / f"batch{b}"
            ids = write_folder(folder, args.batch_pictures, rng, f"soak_batch_b{b}")
            with self.rec.lock:
                self.rec.added.update(ids)
            self._cli("index", str(folder), "--tag", "soak")
            indexed.append((folder, ids))
            if b >= 1:                # remove the oldest folder, then keep going
                folder_out, ids_out = indexed.pop(0)
                self._cli("remove", str(folder_out))
                done = time.monotonic()
                with self.rec.lock:
                    self.rec.deleted_at.update({i: done for i in ids_out})
            self._sleep((self.stop_at - time.monotonic()) / (args.batches - b))   # the rest spread over the run

    def _cli(self, *args: str) -> None:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "indexer", *args, "--json"], env=self.env, cwd=ROOT,
                                capture_output=True, text=True, timeout=1800)
        summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}
        with self.rec.lock:
            self.rec.indexer_runs.append({"command": args[0], "seconds": round(time.monotonic() - started, 1),
                                          **{k: v for k, v in summary.items() if k != "failures"}})
        if result.returncode != 0 or summary.get("failed"):
            self.rec.problem(f"indexer {' '.join(args)}: exit {result.returncode} {result.stderr[-500:]}")

    def writer(self) -> None:
        """Add pictures through the API; delete most of them again."""
        rng = random.Random(self.args.seed + 2)
        session = requests.Session()
        headers = {"Authorization": f"Bearer {KEY}"}
        pause = self.args.minutes * 60 / (self.args.uploads + 1)
        mine: list[str] = []
        for i in range(self.args.uploads):
            if time.monotonic() + pause / 2 > self.stop_at:
                break
            data, ext = encoded(rng, photo(rng))
            try:
                r = session.post(f"{self.url}/api/images", files={"image": (f"soak_upload_{i}.{ext}", data)},
                                 data={"tags": "soak,upload"}, headers=headers, timeout=TIMEOUT)
                self._check("upload", r, 0.0)
                if r.status_code in (200, 201):
                    with self.rec.lock:
                        self.rec.added.add(r.json()["id"])
                    mine.append(r.json()["id"])
                else:
                    self.rec.problem(f"upload: {r.status_code} {r.text[:200]}")
                if len(mine) > 3 and rng.random() < 0.7:
                    doc_id = mine.pop(rng.randrange(len(mine) - 1))    # not the newest
                    r = session.delete(f"{self.url}/api/images/{doc_id}", headers=headers, timeout=TIMEOUT)
                    done = time.monotonic()
                    self._check("delete", r, 0.0)
                    if r.status_code == 200:
                        with self.rec.lock:
                            self.rec.deleted_at[doc_id] = done
                    else:
                        self.rec.problem(f"delete: {r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.rec.problem(f"writer: connection error: {exc}")
            self._sleep(pause)

    def sampler(self, server) -> None:
        while time.monotonic() < self.stop_at:
            sample = {pid: rss_kib(pid) for pid in server.workers}
            sample = {pid: kib for pid, kib in sample.items() if kib}
            with self.rec.lock:
                self.rec.memory.append((time.monotonic() - self.started, sample))
                if self.rec.at_200_images is None and self.rec.image_searches >= 200:
                    self.rec.at_200_images = sample
            self._sleep(2.0)
            if self.args.image_searches and self.rec.image_searches >= self.args.image_searches:
                return

    def _sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.stop_at - time.monotonic())))

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> dict:
        args, rec = self.args, self.rec
        base = write_folder(self.workdir / "photos" / "base", args.base, self.rng, "soak_base")
        rec.added.update(base)
        self.stable = base
        self.env["LOOKALIKE_API_KEY"] = KEY
        self._cli("index", str(self.workdir / "photos" / "base"), "--tag", "base")
        with gunicorn(self.env, self.workdir / "gunicorn.log", workers=args.workers) as server:
            self.url = server.url
            workers_before = server.workers
            self._wait_for_warm_up(server)
            self.started = time.monotonic()
            self.stop_at = self.started + args.minutes * 60
            threads = [threading.Thread(target=self.client, args=(args.seed * 100 + i,)) for i in range(args.clients)]
            if not args.image_searches:
                threads += [threading.Thread(target=self.indexer), threading.Thread(target=self.writer)]
            threads.append(threading.Thread(target=self.sampler, args=(server,)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.monotonic() - self.started
            workers_after = server.workers
            final_memory = {pid: rss_kib(pid) for pid in workers_after}
            count = requests.get(f"{self.url}/api/stats", timeout=TIMEOUT).json()["count"]
            ids_now = self._ids_in_store()
        expected = rec.added - set(rec.deleted_at)
        return self._report(seconds, workers_before, workers_after, final_memory, count, ids_now, expected)

    def _wait_for_warm_up(self, server) -> None:
        """Ready workers warm their model up in the background (one call at each input shape); the run
        starts when every worker has logged the end of it, so its first 10% is a worker's steady state.
        Each worker's memory before and after, and the time it took, go into the report."""
        before = {pid: rss_kib(pid) for pid in server.workers}
        deadline = time.monotonic() + self.args.warm_up_timeout
        pattern = re.compile(r"\[(\d+)\] \[INFO\] model warm-up done: (\d+) input shapes in ([\d.]+) s")
        while True:
            log_text = server.log.read_text(errors="replace")
            done = {int(m[1]): (int(m[2]), float(m[3])) for m in pattern.finditer(log_text)}
            for pid in server.workers:
                if pid in done and pid not in self.rec.warm_up:
                    kib = before.get(pid)
                    self.rec.warm_up[pid] = {"shapes": done[pid][0], "seconds": done[pid][1],
                                             "memory_before_mib": round(kib / 1024) if kib else None,
                                             "memory_after_mib": round((rss_kib(pid) or 0) / 1024)}
            if server.workers <= set(self.rec.warm_up):
                return
            if time.monotonic() > deadline:
                self.rec.problem(f"the workers' model warm-up did not end within {self.args.warm_up_timeout:.0f} s")
                return
            time.sleep(1.0)

    def _ids_in_store(self) -> set[str]:
        from backend.config import Settings
        from backend.stores import open_store
        with open_store(Settings.from_env(self.env)) as store:
            return {entry.id for entry in store.entries()}

    def _report(self, seconds, before, after, final_memory, count, ids_now, expected) -> dict:
        rec = self.rec
        unknown = stale = 0
        for sent, ids in rec.answers:
            for doc_id in ids:
                if doc_id not in rec.added:
                    unknown += 1
                elif rec.deleted_at.get(doc_id, float("inf")) < sent:
                    stale += 1
        memory = self._memory(before)
        report = {
            "minutes": round(seconds / 60, 2), "cpu": cpu_name(), "workers": len(before),
            "clients": self.args.clients, "descriptor_settings": {k: self.env.get(k) for k in FAST_ENV},
            "requests": sum(rec.statuses.values()), "image_searches": rec.image_searches,
            "statuses": dict(sorted(rec.statuses.items())),
            "status_5xx": sum(v for k, v in rec.statuses.items() if k.split()[1].startswith("5")),
            "connection_errors": sum("connection error" in p for p in rec.problems),
            "worker_restarts": len(set(before) - set(after)),
            "answers_checked": len(rec.answers), "unknown_ids_served": unknown, "deleted_ids_served": stale,
            "indexer_runs": len(rec.indexer_runs),
            "indexer_run_seconds": [f"{r['command']} {r['seconds']}" for r in rec.indexer_runs],
            "indexed_by_cli": sum(r.get("indexed", 0) for r in rec.indexer_runs),
            "removed_by_cli": sum(r.get("removed", 0) for r in rec.indexer_runs),
            "api_uploads": rec.statuses.get("upload 201", 0), "api_deletes": rec.statuses.get("delete 200", 0),
            "final_count": count, "expected_count": len(expected), "store_matches": ids_now == expected,
            "memory_mib": memory,
            "warm_up": {str(p): w for p, w in sorted(rec.warm_up.items())},
            "memory_after_200_image_searches_mib": {str(p): round(k / 1024)
                                                    for p, k in (rec.at_200_images or {}).items()},
            "memory_at_end_mib": {str(p): round(k / 1024) for p, k in final_memory.items() if k},
            "growth_after_200_image_searches": {
                str(p): round(final_memory[p] / k - 1, 4) for p, k in (rec.at_200_images or {}).items()
                if final_memory.get(p)},
            "problems": rec.problems[:20], "problem_count": len(rec.problems),
        }
        report["ok"] = bool(
            not rec.problems and report["status_5xx"] == 0 and before == after and unknown == 0 and stale == 0
            and count == len(expected) and ids_now == expected and memory
            and all(m["growth"] < self.args.max_growth for m in memory.values()))
        if self.args.image_searches:   # the dedicated mode: N searches by image, memory at the end over after 200
            growth = report["growth_after_200_image_searches"]
            report["ok"] = bool(report["ok"] and rec.image_searches >= self.args.image_searches
                                and len(growth) == len(before)
                                and all(g < self.args.max_growth for g in growth.values()))
        return report

    def _memory(self, workers: set[int]) -> dict:
        """Per worker: mean RSS over the first and the last 10% of the run, and the growth between them."""
        samples = self.rec.memory
        if len(samples) < 10:
            return {}
        tenth = max(1, len(samples) // 10)
        out = {}
        for pid in sorted(workers):
            first = [s[pid] for _, s in samples[:tenth] if pid in s]
            last = [s[pid] for _, s in samples[-tenth:] if pid in s]
            if first and last:
                a, b = np.mean(first) / 1024, np.mean(last) / 1024
                out[str(pid)] = {"first_10pct": round(float(a), 1), "last_10pct": round(float(b), 1),
                                 "growth": round(float(b / a - 1), 4)}
        return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--base", type=int, default=60, help="photos indexed before the server starts")
    parser.add_argument("--batches", type=int, default=16, help="folders the indexer adds during the run")
    parser.add_argument("--batch-pictures", type=int, default=60, help="photos per folder")
    parser.add_argument("--uploads", type=int, default=40, help="pictures added through the API")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="largest allowed growth of a worker's memory, last 10%% of the run over the first")
    parser.add_argument("--image-searches", type=int, default=0, metavar="N",
                        help="instead of the mix: only N searches by image (no indexer, no uploads), then stop; "
                             "each worker's memory at the end must be within --max-growth of its memory after "
                             "the first 200 (still bounded by --minutes)")
    parser.add_argument("--warm-up-timeout", type=float, default=1200.0,
                        help="seconds to wait for the workers' model warm-up before the run starts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fast", action="store_true", help="the tests' untrained network at 64 px")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 240 or args.clients < 1 or args.base < 5 or args.workers < 1 \
            or not 0 <= args.image_searches <= 100_000 or args.warm_up_timeout <= 0:
        print("error: --minutes must be in (0, 240], --clients and --workers at least 1, --base at least 5, "
              "--image-searches in [0, 100000], --warm-up-timeout above 0", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_") or k == "LOOKALIKE_VGG16_WEIGHTS"}
    if args.fast:
        env.update(FAST_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="lookalike-soak-") as tmp:
        workdir = Path(args.dir or tmp)
        if args.dir and (workdir / "photos").exists():
            print(f"error: {workdir} already holds a soak run; give an empty folder", file=sys.stderr)
            return 2
        workdir.mkdir(parents=True, exist_ok=True)
        env["LOOKALIKE_DATA_DIR"] = str(workdir / "data")
        report = Soak(args, workdir, env).run()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>36}: {value}")
        print("OK" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
