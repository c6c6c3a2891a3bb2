"""``suite bench vision`` runs end to end on small sizes: the MAE step against the all-token
step, and our ViT encoder against the bare timm model (same numbers, then timed)."""

from __future__ import annotations

import json

from suite.bench import vision
from suite.cli import main


def test_bench_vision_reports_the_mae_speedup_and_the_wrapper_overhead(monkeypatch, capsys):
    for name, value in (("BATCH", 2), ("REPEATS", 1), ("WARMUP", 0), ("PRESET", "tiny")):
        monkeypatch.setattr(vision, name, value)  # small sizes: this checks the plumbing
    assert main(["bench", "vision", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mae_speedup"] > 0 and result["all_tokens_images_per_sec"] > 0
    assert result["ours_images_per_sec"] > 0 and result["timm_images_per_sec"] > 0
    assert result["config"]["mask_ratio"] == 0.75
    vision._markdown(result)
    assert "| MAE step, mask 0.75 |" in capsys.readouterr().out
