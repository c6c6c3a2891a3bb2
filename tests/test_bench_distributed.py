"""``suite bench distributed`` at a tiny size: one JSON object with each strategy's figures."""

from __future__ import annotations

import json

import suite.bench.distributed as bench


def test_json_reports_single_ddp_and_fsdp_step_times(capsys) -> None:
    bench.main(json_output=True, batch=2, seconds=1.0, steps=2, tiny=True)
    result = json.loads(capsys.readouterr().out)
    assert result["single_step_s"] > 0
    for strategy in ("ddp", "fsdp"):
        assert result[f"{strategy}_step_s"] > 0
        ratio = result[f"{strategy}_step_s"] / result["single_step_s"]
        assert abs(result[f"{strategy}_ratio"] - ratio) < 1e-9
        assert abs(result[f"{strategy}_efficiency"] * result[f"{strategy}_ratio"] - 1) < 1e-9
