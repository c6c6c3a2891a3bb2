"""``suite bench transcribe`` runs end to end and reports RTFx per workload and decoding."""

from __future__ import annotations

import json

from suite.bench import transcribe
from suite.cli import main


def test_bench_transcribe_json_reports_each_run(monkeypatch, capsys):
    monkeypatch.setattr(transcribe, "DEMO_COUNT", 1)  # little audio: this checks the plumbing
    monkeypatch.setattr(transcribe, "MORE_COUNT", 2)
    monkeypatch.setattr(transcribe, "REPEATS", 2)
    assert main(["bench", "transcribe", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["model"] == "default-asr"
    demo, more = result["workloads"]["demo"], result["workloads"]["more"]
    assert (demo["utterances"], more["utterances"]) == (1, 2)
    assert 0 < demo["audio_seconds"] < more["audio_seconds"]
    for work in (demo, more):
        for decoding in ("default", "greedy"):
            r = work[decoding]
            assert 0 < r["rtfx_min"] <= r["rtfx_median"] <= r["rtfx_max"]
    assert result["transcribe_rtfx"] == more["default"]["rtfx_median"]
