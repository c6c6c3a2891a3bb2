"""Process settings: glibc's malloc keeps freed memory unless the user configured it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"


def _run(code: str, env: dict[str, str] | None = None) -> str:
    """``code``'s output in a fresh interpreter whose environment sets no malloc option but
    ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_malloc_keeps_freed_memory_unless_the_environment_sets_it():
    check = "import suite.runtime as r; print(r.keep_freed_memory(), r.keep_freed_memory())"
    assert _run(check) == "True True"  # applied; the second call answers without redoing it
    assert _run(check, {"MALLOC_TRIM_THRESHOLD_": "0"}) == "False False"
    assert _run(check, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) == "False False"


def test_loading_a_model_applies_it():
    code = "import suite, suite.runtime as r; suite.load('default-asr'); print(r._applied)"
    assert _run(code) == str(GLIBC)
