"""The fuzzer's documented command runs (briefly), and every crash it has found stays fixed.

`python -m benchmarks.fuzz --seconds N` runs atheris over `decode` and the upload parser for longer;
docs/benchmarks.md records those runs.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backend import create_app
from backend.config import Settings

from .conftest import FAST_ENV, ROOT

KEY = "fuzz-key"


@pytest.fixture
def client(tmp_path):
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data"), "LOOKALIKE_API_KEY": KEY})
    app = create_app(settings, load_model=False)
    yield app.test_client()
    app.extensions["lookalike"].store.close()


def multipart(*parts: bytes) -> bytes:
    return b"".join(b"--FUZZ\r\n" + part + b"\r\n" for part in parts) + b"--FUZZ--\r\n"


# -- crashes the fuzzer found ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/search/image", "/api/images"])
def test_a_multipart_part_without_a_name_is_400_not_500(client, path):
    # found by the `body` target: werkzeug files a part whose Content-Disposition has no name under None
    body = multipart(b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nabc',
                     b'Content-Disposition: form-data;m"n=te aags"\r\n\r\ncats')
    response = client.post(path, data=body, content_type="multipart/form-data; boundary=FUZZ",
                           headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and "form field without a name" in error["message"]


# -- the command -----------------------------------------------------------------------------------

def test_fuzz_command_runs_both_targets_without_a_crash(tmp_path, fast_env):
    result = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--seconds", "10", "--crashes",
                             str(tmp_path / "crashes"), "--json"], cwd=ROOT, env=fast_env, capture_output=True,
                            text=True, timeout=600)
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert [r["target"] for r in reports] == ["decode", "body"]
    for report in reports:
        assert report["crashes"] == [] and report["executions"] > report["seed_inputs"]
        assert report["coverage_at_end"] >= report["coverage_at_start"] > 0
    assert not any((tmp_path / "crashes").iterdir())


def test_fuzz_command_refuses_bad_arguments_in_one_line(tmp_path, fast_env):
    result = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--seconds", "5", "--corpus",
                             str(tmp_path / "nowhere")], cwd=ROOT, env=fast_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "no such folder" in result.stderr and "Traceback" not in result.stderr
