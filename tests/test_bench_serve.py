"""``suite bench serve`` for a few seconds with a few clients of each kind: one JSON object, every
final of the clients that stay equal to the offline transcript, no stream left open."""

from __future__ import annotations

import json

import pytest

import suite.bench.serve as bench


# Real-time streaming for a few seconds: on a loaded machine the server falls behind and the
# short soak ends before its finals; CI (test-all) runs it on an otherwise idle machine.
@pytest.mark.slow
def test_json_reports_a_short_soak_with_correct_finals_and_nothing_left_open(capsys) -> None:
    # The shipped streaming-asr (2.6M parameters) streams in real time here; 1 s idle timeout.
    bench.main(
        json_output=True, seconds=3, warmup=1, idle=2, active=2, drops=1, sentences=2,
        idle_timeout=1,
    )  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert (r["idle_clients"], r["active_clients"], r["drop_clients"]) == (2, 2, 1)
    assert r["finals"] >= 2 and r["correct"] == r["finals"]  # each active client's, all right
    assert r["wrong_examples"] == [] and r["failures"] == 0
    assert r["busy_refusals"] == 0  # 3 clients stream at a time; the server takes 32
    assert r["drops"] >= 1 and r["idle_timeouts"] >= 2  # both paths were taken
    assert r["streams_open_end"] == 0  # finished, vanished and timed-out streams were freed
    # The peak (VmHWM) is read once after the run; start and end are medians of 1 s readings.
    assert 0 < r["rss_start_mb"] and 0 < r["rss_end_mb"] and 0 < r["rss_peak_mb"]
    growth = 100 * (r["rss_end_mb"] - r["rss_start_mb"]) / r["rss_start_mb"]
    assert abs(r["rss_growth_pct"] - growth) < 1e-9
    assert r["rss_min_mb"] <= min(r["rss_start_mb"], r["rss_end_mb"]) <= r["rss_max_mb"]
    assert 0 < r["rss_floor_start_mb"] and 0 < r["rss_floor_end_mb"]  # after returning free pages
    assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"]
    assert r["att_context"] and r["threads"] >= 1
