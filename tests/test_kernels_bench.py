"""``suite bench kernels``: one line and exit 2 without CUDA; on a GPU, one JSON object with
every table (a small batch and few timings)."""

from __future__ import annotations

import json

import pytest
import torch

from suite.cli import main

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(CUDA, reason="the message is for machines without a GPU")
def test_without_cuda_one_line_and_no_traceback(capsys):
    assert main(["bench", "kernels", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], captured.err
    assert "Traceback" not in captured.err


@pytest.mark.skipif(not CUDA, reason="times CUDA kernels")
def test_json_on_a_gpu(monkeypatch, capsys):
    from suite.bench import kernels as bench

    monkeypatch.setattr(bench, "SPEECH_BATCH", 8)
    monkeypatch.setattr(bench, "VIT_BATCH", 4)
    monkeypatch.setattr(bench, "SPEECH_CONTEXTS", {"(128, 3)": (128, 3)})
    monkeypatch.setattr(bench, "STREAM_COUNTS", (1, 4))
    monkeypatch.setattr(bench, "ITERS", 2)
    assert main(["bench", "kernels", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"config", "attention", "streaming"}
    for case in result["attention"].values():
        assert "ms" in case["methods"]["triton_packed"]
    assert set(result["streaming"]) == {"1", "4"}
