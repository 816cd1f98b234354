"""gunicorn settings, from the environment: `gunicorn -c gunicorn.conf.py "backend:create_app()"`.

GUNICORN_BIND (e.g. 127.0.0.1:8000 or unix:/run/lookalike.sock), else HOST and PORT (127.0.0.1:8000);
WEB_CONCURRENCY or GUNICORN_WORKERS (2), GUNICORN_THREADS (4), GUNICORN_TIMEOUT (120),
GUNICORN_GRACEFUL_TIMEOUT (30), GUNICORN_KEEPALIVE (5), GUNICORN_LOG_LEVEL (info),
GUNICORN_ACCESS_LOG (- for standard output, empty for none), GUNICORN_MAX_REQUESTS (0: never recycle),
GUNICORN_CONTROL_SOCKET (a path turns on gunicorn's control socket; off by default).

Each worker imports the app after the fork and loads the model once at start-up (no preload: TensorFlow
must not be initialised in the parent and shared across fork). Loading VGG16 takes several seconds
while the worker cannot report to the arbiter, hence the long default timeout.
"""
import json
import os
import sys

import gunicorn.util


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
        if number < 0:
            raise ValueError
        return number
    except ValueError:
        sys.exit(f"error: {name}={value!r} is not valid: expected a whole number")


bind = os.environ.get("GUNICORN_BIND") or (
    f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '8000'}")
workers = _int("GUNICORN_WORKERS", _int("WEB_CONCURRENCY", 2)) or 1
threads = _int("GUNICORN_THREADS", 4) or 1
worker_class = "gthread"
timeout = _int("GUNICORN_TIMEOUT", 120)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
preload_app = False
# gunicorn's control socket (for gunicornc) defaults to one path per user, which several servers on
# one machine (tests, other checkouts) would fight over: off unless GUNICORN_CONTROL_SOCKET names one.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
# Bounds on the request line and headers (gunicorn's own defaults, stated here on purpose).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# A worker that leaks is replaced now and then (jitter keeps workers from restarting together).
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0


def on_starting(server):
    """Check the settings and the store once in the master: a bad LOOKALIKE_* value or an unreachable
    Elasticsearch (after LOOKALIKE_ES_WAIT seconds) stops the server with one readable line, instead of
    every worker failing to boot with a traceback. (No model here: TensorFlow stays out of the master.)"""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from backend.config import ConfigError, Settings
    from backend.stores import StoreError, open_store
    try:
        open_store(Settings.from_env()).close()
    except (ConfigError, StoreError, OSError) as exc:
        sys.exit(f"error: {exc}")


def _json_error(sock, status_int, reason, mesg):
    """gunicorn answers requests it cannot parse (over-long request lines or headers, bad HTTP) itself,
    before the app sees them; this makes those answers JSON like every other error of the API."""
    codes = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
             431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}
    body = json.dumps({"error": {"code": codes.get(status_int, "bad_request"), "message": mesg or reason}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1", "replace")
    gunicorn.util.write_nonblock(sock, head + body)


gunicorn.util.write_error = _json_error  # looked up at call time by gunicorn's workers
