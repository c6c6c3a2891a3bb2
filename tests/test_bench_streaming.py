"""``suite bench streaming`` runs end to end and reports every figure it promises."""

from __future__ import annotations

import json

import pytest

from suite.bench import streaming
from suite.cli import main


# It builds the bench's models and the Emformers and steps every context: minutes on a busy
# machine, so test-all (CI) runs it.
@pytest.mark.slow
def test_bench_streaming_json_reports_each_context(monkeypatch, capsys):
    monkeypatch.setattr(streaming, "SECONDS", 1.5)  # short audio: this checks the plumbing
    monkeypatch.setattr(streaming, "MAX_STREAMS", 2)
    monkeypatch.setattr(streaming, "BATCHED_STREAMS", 2)
    assert main(["bench", "streaming", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["optimize_for_cpu"] is False  # the model as built unless asked
    contexts = result["contexts"]
    # the recipe's chunked ones
    assert set(contexts) == {"[128, 3]", "[128, 0, 3]", "[128, 1, 2]", "[128, 7]", "[128, 15]"}
    assert contexts["[128, 1, 2]"]["chunk_ms"] == contexts["[128, 1, 2]"]["lookahead_ms"] == 80
    assert contexts["[128, 0, 3]"]["lookahead_ms"] == 3 * contexts["[128, 0, 3]"]["chunk_ms"]
    for r in contexts.values():
        assert r["chunk_ms"] in (40, 80, 160, 320, 640)
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"]
        assert r["streaming_rtfx"] > 0 and r["offline_rtfx"] > 0
        assert 0 <= r["realtime_streams"] <= 2
        # BATCHED_STREAMS, and the real-time count when it differs (0 runs nothing).
        assert set(r["batched"]) == {"2", str(r["realtime_streams"])} - {"0"}
        for b in r["batched"].values():
            assert b["streaming_rtfx"] > 0 and b["offline_rtfx"] > 0
            ratio = b["streaming_rtfx"] / b["offline_rtfx"]
            assert b["streaming_over_offline_rtfx"] == ratio
        assert r["emformer"]["throughput_ratio"] > 0
        # Matched dimensions: parameter counts within 15% (ours adds the convolution modules);
        # matched size: equal to 0.1% (to one unit of feed-forward width).
        e = r["emformer"]
        ours, theirs = e["ours"]["parameters"], e["emformer"]["parameters"]
        assert 0.85 < ours / theirs < 1.15
        sized = e["emformer_matched_size"]
        assert sized["ffn_dim"] > e["emformer"]["ffn_dim"]
        assert abs(sized["parameters"] - ours) < 0.001 * ours
        fps = {name: e[name]["frames_per_second"] for name in ("ours", "emformer")}
        assert e["throughput_ratio"] == fps["ours"] / fps["emformer"] > 0
        assert e["throughput_ratio_matched_size"] > 0
        # the same comparison one chunk per turn: different timings, the same kind of figure
        assert set(e["chunkwise"]) == {"throughput_ratio", "throughput_ratio_matched_size"}
        assert all(v > 0 for v in e["chunkwise"].values())
