"""Latency of the three searches over HTTP, under concurrent clients, against gunicorn.

    python -m benchmarks.latency --data-dir DIR --queries FOLDER [--index] [--url URL]
        [--clients 4] [--image-requests 40] [--requests 200] [--workers 2] [--threads 4] [--json]
    python -m benchmarks.latency --compare-precisions auto float32 --data-dir DIR --queries FOLDER [--index]
        [--rounds 3] [--clients-list 1 4] [--json]

--data-dir: the server's LOOKALIKE_DATA_DIR (an embedded store). --queries: a folder of pictures to
search with (for example ../shared/data/corel1k); with --index it is first indexed into the data dir
(with --tags-from-folders; incremental, so a second run skips it). Without --url the script starts
gunicorn itself (gunicorn.conf.py, backend:create_app()) on a free loopback port with the settings
of the environment (LOOKALIKE_VGG16_WEIGHTS etc.) and stops it at the end.

Each search type is measured on its own: a warm-up, then requests sent by --clients threads, each
with its own connection. Times are client-side wall times of whole HTTP requests (upload, decode,
model, kNN, JSON). Image searches use distinct pictures; "image_more" then asks for their second
pages, as the web page's "load more" does (their query vectors come from the workers' shared cache,
DATA_DIR/query-vectors; delete it between runs so that no picture is answered from an earlier run).
Prints p50/p95/p99/mean in milliseconds and throughput per type.

--compare-precisions P1 P2 ...: image searches only, one gunicorn per precision (LOOKALIKE_PRECISION=P,
data dir DIR/P, indexed from --queries with --index), all started before the first request. Each
round sends every server the same distinct pictures at each client count in --clients-list, the
servers' order alternating from round to round, so that drift in the machine's load falls on all
of them alike. Prints p50/p95/mean per precision and client count, and each p50 against the last
precision's (float32 as the reference when it is last).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests

from backend.imaging import is_image_path

from .server import ROOT, gunicorn


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "mean": round(float(a.mean()), 1)}


def measure(send, payloads: list, clients: int) -> dict:
    """Send every payload with `clients` threads (one HTTP session each); times in ms."""
    local = threading.local()
    times: list[float] = []
    errors: list[str] = []

    def one(payload):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        response = send(session, payload)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            errors.append(f"{response.status_code} {response.text[:120]}")
        return elapsed

    wall = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(one, payloads))
    wall = time.perf_counter() - wall
    return {**percentiles(times), "throughput_rps": round(len(payloads) / wall, 2), "errors": len(errors),
            "first_error": errors[0] if errors else None}


def run(url: str, queries: Path, *, clients: int, image_requests: int, requests_per_type: int, seed: int) -> dict:
    rng = random.Random(seed)
    pictures = sorted(p for p in queries.rglob("*") if is_image_path(p))
    if not pictures:
        raise SystemExit(f"error: no pictures under {queries}")
    # distinct pictures, the warm-up's apart: a repeated picture would be answered from the query cache
    drawn = rng.sample(pictures, k=min(len(pictures), image_requests + clients))
    image_warmup, image_payloads = ([p.read_bytes() for p in part] for part in (drawn[:clients], drawn[clients:]))
    tags = [t["tag"] for t in requests.get(f"{url}/api/tags", timeout=30).json()["tags"]]
    if not tags:
        raise SystemExit("error: the store has no tagged documents; index the queries folder (--index)")
    ids = []
    for tag in tags:
        ids += [r["id"] for r in requests.get(f"{url}/api/search", params={"tags": tag, "limit": 100},
                                               timeout=30).json()["results"]]
    # Keyword queries: tags, tag prefixes and file-name words, as people type them.
    words = tags + [t[:3] for t in tags] + [str(rng.randrange(1000)) for _ in range(10)]
    text_payloads = [rng.choice(words) for _ in range(requests_per_type)]
    similar_payloads = [rng.choice(ids) for _ in range(requests_per_type)]

    def by_image(session, data):
        return session.post(f"{url}/api/search/image", files={"image": ("q.jpg", data)}, timeout=300)

    def more_by_image(session, data):  # "load more": the same picture again, the next page
        return session.post(f"{url}/api/search/image?offset=24", files={"image": ("q.jpg", data)}, timeout=300)

    def by_text(session, q):
        return session.get(f"{url}/api/search", params={"q": q}, timeout=60)

    def similar(session, doc_id):
        return session.get(f"{url}/api/images/{doc_id}/similar", timeout=60)

    results = {}
    for name, send, payloads in (("image", by_image, image_payloads), ("image_more", more_by_image, image_payloads),
                                 ("text", by_text, text_payloads),
                                 ("similar", similar, similar_payloads)):
        warmup = image_warmup if name.startswith("image") else payloads[:max(2, clients)]
        measure(send, warmup, clients)  # warm-up: connections, caches, first model calls
        results[name] = measure(send, payloads, clients)
    stats = requests.get(f"{url}/api/stats", timeout=30).json()
    return {"url": url, "documents": stats["count"], "descriptor": stats["descriptor"], "clients": clients,
            "searches": results}


def compare(env: dict, args) -> dict:
    """Image-search latency of one server per precision, rounds alternating between them (see the doc)."""
    import contextlib

    data_dirs = {p: (args.data_dir / p).resolve() for p in args.compare_precisions}
    for precision, folder in data_dirs.items():
        if args.index:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "indexer", "index", str(args.queries), "--tags-from-folders"],
                           env={**env, "LOOKALIKE_DATA_DIR": str(folder), "LOOKALIKE_PRECISION": precision,
                                "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True)
            print(f"{precision}: indexed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for old in (folder / "query-vectors").glob("*"):   # no picture answered from an earlier run
            old.unlink()
    rng = random.Random(args.seed)
    pictures = sorted(p for p in args.queries.rglob("*") if is_image_path(p))
    per_round = sum(max(c * 4, 6) for c in args.clients_list)
    drawn = [p.read_bytes() for p in rng.sample(pictures, k=min(len(pictures), per_round * args.rounds + 4))]
    warmup, drawn = drawn[:4], drawn[4:]

    def by_image(url):
        return lambda session, data: session.post(f"{url}/api/search/image", files={"image": ("q.jpg", data)},
                                                  timeout=600)
    times = {(p, c): [] for p in data_dirs for c in args.clients_list}
    errors = 0
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers = {p: stack.enter_context(gunicorn({**env, "LOOKALIKE_DATA_DIR": str(folder),
                                                    "LOOKALIKE_PRECISION": p}, Path(tmp) / f"{p}.log",
                                                   workers=args.workers, threads=args.threads, ready_timeout=900))
                   for p, folder in data_dirs.items()}
        stats = {p: requests.get(f"{s.url}/api/stats", timeout=30).json() for p, s in servers.items()}
        for server in servers.values():
            measure(by_image(server.url), warmup, max(args.clients_list))   # connections, first model calls
        # the same pictures, in the same order, go to every server (each has its own query-vector cache)
        order = list(servers)
        for number in range(args.rounds):
            for clients in args.clients_list:
                n = max(clients * 4, 6)
                chunk, drawn = drawn[:n], drawn[n:]
                for precision in order[number % len(order):] + order[:number % len(order)]:
                    result = _timed(by_image(servers[precision].url), chunk, clients)
                    times[(precision, clients)] += result["times"]
                    errors += result["errors"]
                loads.append(os.getloadavg()[0])
                print(f"round {number + 1}, {clients} clients: " + ", ".join(
                    f"{p} p50 {np.percentile(times[(p, clients)], 50):.0f} ms" for p in order)
                      + f" (load avg {loads[-1]:.1f})", file=sys.stderr, flush=True)
    reference = args.compare_precisions[-1]
    rows = []
    for clients in args.clients_list:
        for precision in data_dirs:
            row = {"precision": precision, "clients": clients, **percentiles(times[(precision, clients)]),
                   "runs": "{precision} on {runtime}".format_map(stats[precision].get("model") or
                                                                 {"precision": "?", "runtime": "?"}),
                   "descriptor": stats[precision]["descriptor"]}
            row["p50_vs_" + reference] = round(np.percentile(times[(reference, clients)], 50) / row["p50"], 2)
            rows.append(row)
    return {"rows": rows, "errors": errors, "cpu": (stats[reference].get("model") or {}).get("cpu"),
            "documents": {p: s["count"] for p, s in stats.items()}, "rounds": args.rounds,
            "load_average": [min(loads), max(loads)], "workers": args.workers, "threads": args.threads}


def _timed(send, payloads: list, clients: int) -> dict:
    local = threading.local()
    errors = []

    def one(payload):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        response = send(session, payload)
        if response.status_code != 200:
            errors.append(response.status_code)
        return (time.perf_counter() - started) * 1000
    with ThreadPoolExecutor(clients) as pool:
        return {"times": list(pool.map(one, payloads)), "errors": len(errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="LOOKALIKE_DATA_DIR of the server (when it is started here)")
    parser.add_argument("--queries", type=Path, required=True, help="a folder of pictures to search with")
    parser.add_argument("--index", action="store_true", help="index --queries into --data-dir first")
    parser.add_argument("--url", help="a running server (loopback); default: start gunicorn here")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--image-requests", type=int, default=40)
    parser.add_argument("--requests", type=int, default=200, help="text and similar requests each")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compare-precisions", nargs="+", metavar="P",
                        help="image searches only, one server per precision (LOOKALIKE_PRECISION), rounds alternating")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare-precisions")
    parser.add_argument("--clients-list", type=int, nargs="+", default=[1, 4], help="with --compare-precisions")
    args = parser.parse_args(argv)
    if not args.queries.is_dir():
        parser.error(f"--queries {args.queries}: no such folder")
    if not args.url and not args.data_dir:
        parser.error("give --url of a running server, or --data-dir to start one here")
    env = dict(os.environ)
    if args.compare_precisions:
        if args.url or not args.data_dir:
            parser.error("--compare-precisions starts its own servers: give --data-dir, not --url")
        report = compare(env, args)
        report.update(date=time.strftime("%Y-%m-%d %H:%M %Z"))
        if args.json:
            print(json.dumps(report))
        else:
            print(f"image search, {report['rounds']} alternating rounds; CPU {report['cpu']}; "
                  f"load average {report['load_average'][0]:.1f} to {report['load_average'][1]:.1f}")
            ref = args.compare_precisions[-1]
            print(f"{'precision':10} {'clients':>7} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} "
                  f"{'vs ' + ref:>10}  runs")
            for r in report["rows"]:
                print(f"{r['precision']:10} {r['clients']:>7} {r['n']:>4} {r['p50']:>8} {r['p95']:>8} {r['mean']:>8} "
                      f"{r['p50_vs_' + ref]:>9}x  {r['runs']} ({r['descriptor']})")
        return 0 if report["errors"] == 0 else 1
    if args.data_dir:
        env["LOOKALIKE_DATA_DIR"] = str(args.data_dir.resolve())
    if args.index:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "indexer", "index", str(args.queries), "--tags-from-folders"],
                       env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True)
        print(f"indexed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    options = dict(clients=args.clients, image_requests=args.image_requests, requests_per_type=args.requests,
                   seed=args.seed)
    if args.url:
        host = urlsplit(args.url).hostname or ""
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            parser.error(f"--url: only loopback servers may be measured (got {host!r})")
        try:
            report = run(args.url.rstrip("/"), args.queries, **options)
        except requests.RequestException as exc:
            print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
    else:
        with tempfile.TemporaryDirectory() as tmp, \
                gunicorn(env, Path(tmp) / "gunicorn.log", workers=args.workers, threads=args.threads) as server:
            report = run(server.url, args.queries, **options)
            report.update(gunicorn_workers=args.workers, gunicorn_threads=args.threads)
    report.update(machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                  date=time.strftime("%Y-%m-%d %H:%M %Z"), load_average=[round(x, 2) for x in os.getloadavg()])
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['documents']} documents ({report['descriptor']}), {args.clients} concurrent clients")
        print(f"{'search':10} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'req/s':>7} errors")
        for name, r in report["searches"].items():
            print(f"{name:10} {r['n']:>5} {r['p50']:>9} {r['p95']:>9} {r['p99']:>9} {r['mean']:>9} "
                  f"{r['throughput_rps']:>7} {r['errors']}")
        print(f"load average at the end: {report['load_average']}")
    return 0 if all(r["errors"] == 0 for r in report["searches"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
