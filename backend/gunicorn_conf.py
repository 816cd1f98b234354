"""gunicorn's settings for the app: `gunicorn -c python:backend.gunicorn_conf "backend:create_app()"`, which
is what `lookalike serve` runs (gunicorn.conf.py in the checkout is this module under gunicorn's default
name). The values come from `ServerSettings` (backend/config.py; README, "Configuration").

Each worker imports the app after the fork and loads the model once at start-up (no preload: TensorFlow
must not be initialised in the parent and shared across fork). Loading VGG16 takes several seconds
while the worker cannot report to the arbiter, hence the long default timeout.
"""
import json
import sys

import gunicorn.util

from backend.config import ConfigError, ServerSettings

try:
    _server = ServerSettings.from_env()
except ConfigError as exc:
    sys.exit(f"error: {exc}")

bind = _server.address
workers = _server.workers or 1
threads = _server.threads or 1
worker_class = "gthread"
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout
keepalive = _server.keepalive
loglevel = _server.log_level
accesslog = _server.access_log  # None: no access log
errorlog = "-"
preload_app = False
# gunicorn's control socket (for gunicornc) defaults to one path per user, which several servers on
# one machine (tests, other checkouts) would fight over: off unless GUNICORN_CONTROL_SOCKET names one.
control_socket_disable = _server.control_socket is None
if not control_socket_disable:
    control_socket = _server.control_socket
# Bounds on the request line and headers (gunicorn's own defaults, stated here on purpose).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# A worker that leaks is replaced now and then (jitter keeps workers from restarting together).
max_requests = _server.max_requests
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0


def on_starting(server):
    """Check the settings and the store once in the master: a bad LOOKALIKE_* value or an unreachable
    Elasticsearch (after LOOKALIKE_ES_WAIT seconds) stops the server with one readable line, instead of
    every worker failing to boot with a traceback. (No model here: TensorFlow stays out of the master.)"""
    from backend.config import Settings
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

# What `from backend.gunicorn_conf import *` (gunicorn.conf.py) hands to gunicorn: its settings and hooks.
__all__ = [name for name in ("bind", "workers", "threads", "worker_class", "timeout", "graceful_timeout",
                             "keepalive", "loglevel", "accesslog", "errorlog", "preload_app",
                             "control_socket_disable", "control_socket", "limit_request_line",
                             "limit_request_fields", "limit_request_field_size", "max_requests",
                             "max_requests_jitter", "on_starting") if name in globals()]
