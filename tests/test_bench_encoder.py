"""``suite bench encoder`` runs end to end, as built and with the opt-in CPU re-layout."""

from __future__ import annotations

import json

from suite.bench import encoder
from suite.cli import main


def test_bench_encoder_reports_both_stacks_and_whether_ours_was_relaid(monkeypatch, capsys):
    for name, value in (("BATCH", 2), ("FRAMES", 24), ("REPEATS", 1), ("WARMUP", 0)):
        monkeypatch.setattr(encoder, name, value)  # small sizes: this checks the plumbing
    assert main(["bench", "encoder", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["optimize_for_cpu"] is False
    assert result["throughput_ratio"] > 0 and result["throughput_ratio_no_padding"] > 0
    assert result["ours"]["parameters"] > 0
    relaid = encoder.measure(optimize_for_cpu=True)
    assert relaid["config"]["optimize_for_cpu"] is True
    assert relaid["ours"]["parameters"] == result["ours"]["parameters"]
    encoder._markdown(relaid)
    assert "optimize_for_cpu" in capsys.readouterr().out
