"""Running the Triton kernels' tests without a GPU (as ``torch.testing`` serves torch's).

``TRITON_INTERPRET=1`` makes Triton run kernels on the CPU, but it is read when a kernel is
defined, so it cannot be switched on inside a test session that has imported them.
:func:`interpreter_parity` runs a test file again in a child process with it set; the parent
session never sees the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from suite.kernels.varlen import interpreting

INTERPRET = interpreting()
CUDA = torch.cuda.is_available()
DEVICE = "cpu" if INTERPRET or not CUDA else "cuda"  # where the Triton cases run


def interpreter_parity(test_file: str, timeout: float = 600) -> None:
    """Run ``pytest test_file`` under ``TRITON_INTERPRET=1`` in a child process.

    Raises:
        AssertionError: the child failed or ran no test (with the end of its output).
    """
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout, done.stdout[-2000:]
