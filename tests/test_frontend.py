"""The web page's words for the API's errors: frontend/messages.js has a sentence for every error code the
server can answer (the API's own, Werkzeug's through backend/api/errors.py, gunicorn's through
backend/gunicorn_conf.py, and the table in docs/api.md), and none for a code that does not exist.
The page itself runs in tests/test_browser.py."""
from __future__ import annotations

import re

from .conftest import ROOT

# A status and a code beside it: ApiError(400, "bad_parameter", ...), error_response(503, "store_error", ...),
# {413: "too_large"} and ("too_large": (413, "too_large")).
STATUS_AND_CODE = re.compile(r'\b([45]\d\d)\s*[:,]\s*\(?\s*"([a-z][a-z0-9_]*)"')


def server_codes() -> set[str]:
    codes = set()
    for path in (ROOT / "backend").rglob("*.py"):
        codes |= {code for _, code in STATUS_AND_CODE.findall(path.read_text())}
    errors = (ROOT / "docs" / "api.md").read_text().split("\n## Errors", 1)[1]
    for row in re.findall(r"^\| *\d{3}[^\n]*", errors, re.MULTILINE):
        codes |= set(re.findall(r"`([a-z][a-z0-9_]*)`", row.split("|")[2]))
    return codes


def page_codes() -> set[str]:
    source = (ROOT / "frontend" / "messages.js").read_text()
    table = source.split("const BY_CODE = {", 1)[1].split("\n};", 1)[0]
    return set(re.findall(r"^ +([a-z][a-z0-9_]*):", table, re.MULTILINE))


def test_the_page_has_words_for_every_error_code_the_server_answers():
    server, page = server_codes(), page_codes()
    # A few codes of the table in docs/api.md: the search above finds them at all.
    assert {"store_unavailable", "store_error", "model_unavailable", "not_ready", "bad_base64", "uri_too_long",
            "headers_too_large", "file_missing", "descriptor_mismatch"} <= server
    assert server - page == set(), "codes without words in frontend/messages.js"
    assert page - server == set(), "words in frontend/messages.js for codes the server never answers"
