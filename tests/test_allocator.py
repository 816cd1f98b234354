"""The malloc settings a server worker and the indexer apply to themselves (backend/allocator.py)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_malloc_settings():
    # in a fresh process: the settings stay for the rest of the process that applies them
    code = "from backend.allocator import tune_allocator; print(tune_allocator())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
