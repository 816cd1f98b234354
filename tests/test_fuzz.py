"""The fuzzer's documented command runs (briefly), and every crash it has found stays fixed.

`python -m benchmarks.fuzz --seconds N` runs atheris over `decode` and the upload parser for longer;
docs/benchmarks.md records those runs.
"""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from backend import create_app
from backend.config import Settings
from backend.imaging import Limits, decode

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


def gif_whose_frame_outgrows_its_screen(frame: int, decodable: bool = True) -> bytes:
    """A GIF of a 16x16 screen whose one frame is frame x frame, disposed to the background (what the
    `decode` target found): Pillow grows the picture to the frame and fills its disposal area while opening.
    Not decodable: only the frame's header says frame x frame (its pixels are 16x16), for sizes too big to make."""
    out = io.BytesIO()
    Image.new("P", (frame, frame) if decodable else (16, 16), 1).save(out, "GIF", disposal=2)
    data = bytearray(out.getvalue())
    if decodable:
        data[6:10] = struct.pack("<HH", 16, 16)                      # the logical screen
    else:
        descriptor = data.index(b"\x21\xf9\x04") + 8               # after the graphic control extension
        assert data[descriptor] == 0x2C
        data[descriptor + 5:descriptor + 9] = struct.pack("<HH", frame, frame)
    return bytes(data)


def test_a_gif_frame_larger_than_its_screen_is_refused_before_any_memory_is_spent(tmp_path):
    # Found by the `decode` target as an out-of-memory: opening this 60-byte file took 3.5 GB and 15 s
    # before the pixel limit was checked. A fresh process, so that its peak memory is its own.
    path = tmp_path / "frame.gif"
    path.write_bytes(gif_whose_frame_outgrows_its_screen(60000, decodable=False))
    child = textwrap.dedent(f"""
        from pathlib import Path
        from backend.imaging import ImageError, Limits, decode
        try:
            decode(Path({str(path)!r}).read_bytes(), Limits(), "frame.gif")
        except ImageError as exc:
            print(exc.kind, exc.reason)
        peak_kb = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
        print(peak_kb // 1024)
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    refusal, peak_mb = result.stdout.splitlines()
    assert int(peak_mb) < 300, f"decoding the refused GIF peaked at {peak_mb} MB"
    assert refusal == "too_large 3,600,000,000 pixels is over the limit of 50,000,000"


def test_the_api_answers_that_gif_413(client):
    body = gif_whose_frame_outgrows_its_screen(60000, decodable=False)
    response = client.post("/api/search/image", data={"image": (io.BytesIO(body), "frame.gif")})
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("frame", [16, 4000])
def test_a_gif_frame_within_the_limit_still_decodes(frame):
    decoded = decode(gif_whose_frame_outgrows_its_screen(frame), Limits(), "frame.gif")
    assert decoded.image.mode == "RGB" and decoded.image.size == (frame, frame)


# -- the command -----------------------------------------------------------------------------------

def test_fuzz_command_runs_both_targets_without_a_crash(tmp_path, fast_env):
    result = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--seconds", "10", "--crashes",
                             str(tmp_path / "crashes"), "--json"], cwd=ROOT, env=fast_env, capture_output=True,
                            text=True, timeout=600)
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    failures = "\n".join(f"{r['target']}: exit {r['exit']}, crashes {r['crashes']}\n{r.get('error', '')}"
                         for r in reports if r["exit"] or r["crashes"])
    assert result.returncode == 0, failures or result.stderr[-3000:]
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
