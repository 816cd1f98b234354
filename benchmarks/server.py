"""Start the real server (gunicorn with gunicorn.conf.py and backend:create_app()) on a free loopback
port, wait until /api/ready answers 200, and stop it afterwards. Used by the gunicorn test and by
the latency and malformed-request scripts."""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(master_pid: int) -> set[int]:
    """The gunicorn master's children (its workers), from /proc (Linux)."""
    try:
        text = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return set()
    return {int(pid) for pid in text.split()}


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    @property
    def workers(self) -> set[int]:
        return worker_pids(self.process.pid)


@contextlib.contextmanager
def gunicorn(env: dict, log: Path, *, workers: int = 2, threads: int = 4, ready_timeout: float = 180.0
             ) -> Iterator[Server]:
    """A gunicorn on 127.0.0.1:<free port>, with `env` (LOOKALIKE_* settings) and its output in `log`."""
    port = free_port()
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers),
           "GUNICORN_THREADS": str(threads), "GUNICORN_ACCESS_LOG": ""}
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn_bin) if gunicorn_bin.exists() else "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
               "backend:create_app()"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                # Every worker loads its model at start; a few ready answers make it likely all are up.
                if all(requests.get(server.url + "/api/ready", timeout=5).status_code == 200 for _ in range(4)) \
                        and len(server.workers) >= workers:
                    break
            except requests.RequestException:  # not listening yet, or workers still loading the model
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready after {ready_timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # graceful: workers finish their requests
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
