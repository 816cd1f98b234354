"""Throw malformed requests at a running server and check that it survives them.

    python -m benchmarks.malformed --url http://127.0.0.1:8000 [--count 1000] [--clients 4] [--seed 1]
        [--master-pid PID] [--json]

Requests: random bytes, truncated JPEGs, headers claiming huge dimensions, large-but-legal pictures,
wrong fields and content types, bad JSON and base64, bad parameters, bad and hostile ids, wrong
methods, writes without or with a wrong key. Passes when no answer is a 5xx, every error answer is
the JSON error shape, no request hangs (30 s timeout), /api/ready still answers 200 and, with
--master-pid (the gunicorn master), the same workers are alive as before (none crashed and was
replaced). Exit status 0 on success, 1 otherwise. Only loopback URLs are accepted.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import random
import struct
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import numpy as np
import requests
from PIL import Image

from .server import worker_pids

TIMEOUT = 30.0


@dataclass
class Outcome:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)   # 5xx, non-JSON errors, hangs
    accepted: Counter = field(default_factory=Counter)  # kinds of request answered 2xx (odd but valid)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {"sent": self.sent, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "accepted": dict(self.accepted.most_common()), "problems": self.problems[:20],
                "problem_count": len(self.problems), "seconds": round(self.seconds, 1)}


# -- bodies ---------------------------------------------------------------------------------------------

def _jpeg(rng: random.Random, size=(160, 120)) -> bytes:
    arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG", quality=80)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, body: bytes = b"\0" * 64) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG start (SOI, SOF0) claiming width x height, then garbage."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00" + b"\x00" * 200


def _gif_claiming(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x2c" + b"\x00" * 9
            + b"\x02\x02\x44\x01\x00\x3b")


def _bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def _big_legal_png(side: int) -> bytes:
    """A real PNG of side x side (compresses to almost nothing, decodes to side*side*3 bytes)."""
    raw = b"".join(b"\x00" + b"\x80" * (side * 3) for _ in range(side))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def _bad_image(rng: random.Random, sample: bytes, big: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["random", "random", "truncated", "truncated", "claims", "claims", "flipped", "empty",
                       "text", "big"])
    if kind == "random":
        return kind, rng.randbytes(rng.choice([1, 10, 1000, 50_000, 300_000]))
    if kind == "truncated":
        return kind, sample[:rng.randrange(2, len(sample) - 1)]
    if kind == "claims":
        make = rng.choice([_png_claiming, _jpeg_claiming, _gif_claiming, _bmp_claiming])
        width, height = rng.choice([(65_535, 65_535), (50_000, 1_001), (20_000, 20_000), (1, 65_535)])
        return f"claims-{make.__name__.split('_')[1]}", make(width, height)
    if kind == "flipped":
        data = bytearray(sample)
        for _ in range(rng.randrange(1, 40)):
            data[rng.randrange(100, len(data))] = rng.randrange(256)
        return kind, bytes(data)
    if kind == "empty":
        return kind, b""
    if kind == "text":
        return kind, rng.choice([b"<html><body>hi</body></html>", b"%PDF-1.4\n", b"{\"image\": 1}", b"\x00" * 300])
    return kind, big


# -- requests -------------------------------------------------------------------------------------------

def make_request(rng: random.Random, sample: bytes, big: bytes, doc_id: str) -> tuple[str, str, str, dict]:
    """(description, method, path, requests kwargs) of one malformed request."""
    family = rng.randrange(10)
    if family <= 2:  # a bad image, multipart
        kind, data = _bad_image(rng, sample, big)
        return f"image/{kind}", "POST", "/api/search/image", {"files": {"image": ("x.jpg", data)}}
    if family == 3:  # a bad image, JSON base64
        kind, data = _bad_image(rng, sample, big)
        body = {"json": {"image_base64": base64.b64encode(data).decode()}}
        return f"base64/{kind}", "POST", "/api/search/image", body
    if family == 4:  # wrong fields, content types, JSON
        choice = rng.randrange(9)
        options = [
            ("field-name", {"files": {"file": ("x.jpg", sample)}}),
            ("form-text", {"data": {"image": "not a file"}}),
            ("raw-bytes", {"data": sample, "headers": {"Content-Type": "image/jpeg"}}),
            ("bad-json", {"data": b"{\"image_base64\": ", "headers": {"Content-Type": "application/json"}}),
            ("json-list", {"json": [1, 2, 3]}),
            ("json-types", {"json": {"image_base64": rng.choice([None, 1, [], {}, True])}}),
            ("bad-base64", {"json": {"image_base64": "@@@" + "A" * rng.randrange(0, 50)}}),
            ("deep-json", {"data": b"[" * 200_000, "headers": {"Content-Type": "application/json"}}),
            ("broken-multipart", {"data": b"--xx\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
                                          + sample[:500],
                                  "headers": {"Content-Type": "multipart/form-data; boundary=xx"}}),
        ]
        name, kwargs = options[choice]
        return f"fields/{name}", "POST", "/api/search/image", kwargs
    if family == 5:  # bad parameters
        param = rng.choice(["limit=0", "limit=-5", "limit=1000000", "limit=abc", "limit=", "offset=-1",
                            "offset=99999999999999999999", "min_score=nan", "min_score=inf", "min_score=2",
                            "tags=" + ",".join(["x"] * 50), "tags=" + "y" * 5000, "q=" + "z" * 5000,
                            "limit=1&limit=2", "nonsense=1", "q=%00%ff%fe", "q=" + quote("\"' OR 1=1 --*NEAR("),
                            "min_score=" + "9" * 400])
        path = rng.choice(["/api/search?q=a&", f"/api/images/{doc_id}/similar?", "/api/tags?"])
        return f"param/{param[:20]}", "GET", path + param, {}
    if family == 6:  # bad or hostile ids
        bad_id = rng.choice(["..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "0" * 5000, "%00", "ZZZZ",
                             doc_id.upper(), doc_id[:-1], "' OR '1'='1", "%F0%9F%98%80", "0123456789abcdef012g"])
        suffix = rng.choice(["", "/file", "/thumbnail", "/similar"])
        return f"id{suffix or '/meta'}", "GET", f"/api/images/{bad_id}{suffix}", {}
    if family == 7:  # wrong methods and routes
        method, path = rng.choice([("PUT", "/api/search"), ("DELETE", "/api/search/image"), ("PATCH", "/api/images"),
                                   ("GET", "/api/images"), ("POST", "/api/health"), ("GET", "/api/nope"),
                                   ("GET", "/static/../backend/config.py"), ("GET", "/api//search")])
        return f"route/{method}", method, path, {}
    if family == 8:  # writes without or with a wrong key
        headers = rng.choice([{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                              {"Authorization": "Bearer " + "k" * 5000}])
        if rng.random() < 0.5:
            return "auth/upload", "POST", "/api/images", {"files": {"image": ("x.jpg", sample)}, "headers": headers}
        return "auth/delete", "DELETE", f"/api/images/{doc_id}", {"headers": headers}
    # huge headers or query strings
    if rng.random() < 0.5:
        return "huge/query", "GET", "/api/search?q=" + "a" * rng.choice([3000, 10_000]), {}
    return "huge/header", "GET", "/api/health", {"headers": {"X-Junk": "j" * rng.choice([5000, 20_000])}}


def _check(response: requests.Response, what: str, outcome: Outcome) -> None:
    outcome.statuses[response.status_code] += 1
    if response.status_code < 300:
        outcome.accepted[what] += 1
    if response.status_code >= 500:
        outcome.problems.append(f"{what}: {response.status_code} {response.text[:200]}")
    elif response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        if not (isinstance(body.get("error"), dict) and {"code", "message"} <= set(body["error"])):
            outcome.problems.append(f"{what}: error without the JSON error shape: {response.text[:200]}")
    elif response.status_code >= 400:
        outcome.problems.append(f"{what}: {response.status_code} is not JSON: {response.text[:200]}")


def _an_indexed_id(url: str) -> str | None:
    tags = requests.get(f"{url}/api/tags", params={"limit": 1}, timeout=TIMEOUT).json()["tags"]
    if not tags:
        return None
    hits = requests.get(f"{url}/api/search", params={"tags": tags[0]["tag"], "limit": 1}, timeout=TIMEOUT).json()
    return hits["results"][0]["id"] if hits["results"] else None


def run(url: str, count: int = 1000, clients: int = 4, seed: int = 1) -> Outcome:
    host = urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit(f"error: only loopback servers may be targeted (got {host!r})")
    rng = random.Random(seed)
    sample = _jpeg(rng)
    big = _big_legal_png(5000)  # 25 Mpixel: under the default pixel limit, decoded for real
    doc_id = _an_indexed_id(url) or "0123456789abcdef0123"
    planned = [make_request(random.Random(rng.randrange(1 << 30)), sample, big, doc_id) for _ in range(count)]
    outcome = Outcome()
    started = time.perf_counter()

    def send(item):
        what, method, path, kwargs = item
        with requests.Session() as session:
            try:
                return what, session.request(method, url + path, timeout=TIMEOUT, **kwargs), None
            except requests.RequestException as exc:
                return what, None, exc

    with ThreadPoolExecutor(clients) as pool:
        for what, response, exc in pool.map(send, planned):
            outcome.sent += 1
            if exc is not None:
                outcome.statuses["no answer"] += 1
                outcome.problems.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                _check(response, what, outcome)
    outcome.seconds = time.perf_counter() - started
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.malformed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--master-pid", type=int, help="gunicorn master's pid: check that no worker was replaced")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    try:
        before = worker_pids(args.master_pid) if args.master_pid else set()
        outcome = run(url, args.count, args.clients, args.seed)
        ready = requests.get(f"{url}/api/ready", timeout=TIMEOUT).status_code
    except requests.RequestException as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    after = worker_pids(args.master_pid) if args.master_pid else set()
    report = {**outcome.as_json(), "ready_after": ready}
    if args.master_pid:
        report.update(workers_before=sorted(before), workers_after=sorted(after))
    ok = not outcome.problems and ready == 200 and (not args.master_pid or (before and before == after))
    report["ok"] = ok
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{outcome.sent} malformed requests in {outcome.seconds:.1f} s; statuses: "
              f"{dict(sorted(outcome.statuses.items(), key=str))}")
        print(f"answered 2xx: {dict(outcome.accepted.most_common())}")
        for problem in outcome.problems[:20]:
            print(f"  problem: {problem}")
        print(f"/api/ready after: {ready}")
        if args.master_pid:
            print(f"workers before: {sorted(before)}  after: {sorted(after)}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
