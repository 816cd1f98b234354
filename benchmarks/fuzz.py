"""Coverage-guided fuzzing (atheris, libFuzzer) of the decoder and of the upload parser.

    python -m benchmarks.fuzz --seconds N [--target decode|body|all] [--corpus DIR]... [--crashes DIR]
        [--seed 1] [--json]

Targets:
- decode: `backend.imaging.decode` on the bytes (with the draft size the first byte picks); it must
  return an RGB picture or raise ImageError, and nothing else.
- body: `backend.api.body.read_image` on a request to /api/search/image or /api/images, multipart,
  JSON or another content type (the first byte picks), then `decode` on the picture it returns, as
  the endpoints do; only ApiError, HTTP errors (4xx) and ImageError may come out.

Both start from the odd files of `benchmarks.odd_files` (and, for `body`, multipart and JSON bodies
carrying them), plus the files under every --corpus folder (read only: for example Pillow's
Tests/images from its sdist, `pip download --no-binary :all: --no-deps pillow==13.0.0`). New inputs
go to a temporary corpus. --seconds is shared between the targets. A crash (any other exception) is
written to --crashes (default ./fuzz-crashes) and the command exits 1; each one found so far is a
regression test in tests/test_fuzz.py. Limits while fuzzing: 2 MB, 4 million pixels, so that each
input is decoded in milliseconds.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("decode", "body")
MAX_LEN = 1 << 20   # inputs longer than this are cut (seeds too)
DRAFT_SIZES = (None, 64, 336)
# The first byte of a `body` input: bit 0 the endpoint, bits 1-2 the content type.
CONTENT_TYPES = ("multipart/form-data; boundary=FUZZ", "application/json", "text/plain",
                 "multipart/form-data; boundary=FUZZ")
BOUNDARY = b"FUZZ"


def limits():
    from backend.imaging import Limits
    return Limits(max_bytes=2_000_000, max_pixels=4_000_000)


def check_decode(data: bytes) -> None:
    from backend.imaging import ImageError, decode
    if not data:
        return
    try:
        decoded = decode(data[1:], limits(), "fuzz", draft_size=DRAFT_SIZES[data[0] % 3])
    except ImageError:
        return
    if decoded.image.mode != "RGB" or min(decoded.image.size) < 1:
        raise AssertionError(f"decode returned {decoded.image.mode} {decoded.image.size}")


class BodyTarget:
    """read_image under a real request context of the real application (no model, empty store)."""

    def __init__(self):
        from backend import create_app
        from backend.config import Settings
        self.folder = tempfile.mkdtemp(prefix="lookalike-fuzz-")
        settings = Settings.from_env({"LOOKALIKE_DATA_DIR": self.folder, "LOOKALIKE_VGG16_WEIGHTS": "random"})
        self.app = create_app(settings, load_model=False)

    def __call__(self, data: bytes) -> None:
        from werkzeug.exceptions import HTTPException

        from backend.api.body import read_image
        from backend.api.errors import ApiError
        from backend.imaging import ImageError, decode
        if not data:
            return
        path = ("/api/search/image", "/api/images")[data[0] & 1]
        content_type = CONTENT_TYPES[(data[0] >> 1) & 3]
        with self.app.test_request_context(path, method="POST", data=data[1:], content_type=content_type):
            try:
                body = read_image(named=path == "/api/images")
                decode(body.data, limits(), "upload", draft_size=64)
            except (ApiError, ImageError):
                return
            except HTTPException as exc:
                if exc.code is None or exc.code >= 500:
                    raise
                return


def seeds(target: str) -> dict[str, bytes]:
    """Starting inputs, named."""
    from .odd_files import odd_files
    files = odd_files()
    if target == "decode":
        return {f"{name}.{i}": bytes([i]) + data for name, data in files.items() for i in (0, 1)}
    out = {}
    for name, data in files.items():
        part = (b"--FUZZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + name.encode()
                + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data
                + b"\r\n--FUZZ\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\ncats, dogs\r\n--FUZZ--\r\n")
        out[f"multipart-{name}"] = bytes([0b001]) + part
        body = {"image_base64": base64.b64encode(data).decode(), "limit": 5, "tags": ["a"]}
        out[f"json-{name}"] = bytes([0b010]) + json.dumps(body).encode()
        out[f"json-named-{name}"] = bytes([0b011]) + json.dumps({**body, "filename": name}).encode()
    return out


def _worker(target: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the fuzzing subprocess: libFuzzer owns the process and exits it."""
    import atheris
    with atheris.instrument_imports(include=["backend", "PIL", "pillow_heif", "werkzeug", "flask"]):
        import backend.api.body  # noqa: F401
        import backend.imaging  # noqa: F401
        from PIL import Image
        Image.init()          # import every plugin now, so they are instrumented too
    check = check_decode if target == "decode" else BodyTarget()
    atheris.Setup([sys.argv[0], *libfuzzer_args], check)
    atheris.Fuzz()


def run_target(target: str, seconds: int, corpora: list[Path], crashes: Path, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"lookalike-fuzz-{target}-") as work:
        work = Path(work)
        for name, data in seeds(target).items():
            (work / name).write_bytes(data[:MAX_LEN])
        crashes.mkdir(parents=True, exist_ok=True)
        before = set(crashes.iterdir())
        args = [f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-timeout=20", "-rss_limit_mb=3072",
                f"-seed={seed}", f"-artifact_prefix={crashes}/{target}-", "-print_final_stats=1",
                str(work), *map(str, corpora)]
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        result = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--_worker", target, "--", *args],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 600)
        elapsed = time.monotonic() - started
        log = result.stderr
        found = sorted(str(p) for p in set(crashes.iterdir()) - before)
        stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
        cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
        initial = re.search(r"INITED cov: (\d+) ft: (\d+) corp: (\d+)", log)
        report = {"target": target, "seconds": round(elapsed, 1), "exit": result.returncode,
                  "executions": int(stat.get("number_of_executed_units", 0)),
                  "seed_inputs": len(seeds(target)) + sum(1 for c in corpora for p in c.rglob("*") if p.is_file()),
                  "coverage_at_start": int(initial.group(1)) if initial else None,
                  "coverage_at_end": int(cov[-1][0]) if cov else None,
                  "features_at_end": int(cov[-1][1]) if cov else None,
                  "corpus_at_end": int(cov[-1][2]) if cov else None,
                  "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
                  "crashes": found}
        if result.returncode != 0 and not found:   # libFuzzer itself failed (a bad flag, out of memory, ...)
            first_error = log.find("ERROR: libFuzzer")
            report["error"] = log[first_error:first_error + 3000] if first_error >= 0 else log[-3000:]
        return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        _worker(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, required=True, help="total fuzzing time, shared by the targets")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--corpus", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of further starting inputs (read only; repeat)")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), metavar="DIR")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON line per target")
    args = parser.parse_args(argv)
    missing = [str(c) for c in args.corpus if not c.is_dir()]
    if missing or args.seconds < 1:
        print(f"error: {'no such folder: ' + ', '.join(missing) if missing else '--seconds must be 1 or more'}",
              file=sys.stderr)
        return 2
    targets = TARGETS if args.target == "all" else (args.target,)
    ok = True
    for target in targets:
        report = run_target(target, max(1, args.seconds // len(targets)), args.corpus, args.crashes.resolve(),
                            args.seed)
        ok = ok and not report["crashes"] and "error" not in report
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            print(f"{target}: {report['executions']} inputs in {report['seconds']} s, coverage "
                  f"{report['coverage_at_start']} -> {report['coverage_at_end']}, corpus {report['corpus_at_end']}, "
                  f"crashes: {report['crashes'] or 'none'}", flush=True)
            if "error" in report:
                print(report["error"], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
