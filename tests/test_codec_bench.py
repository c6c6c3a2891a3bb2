"""``suite bench codec`` measures speed per bitrate and quantizer; shown on the tiny preset."""

from __future__ import annotations

from suite.bench import BENCHMARKS
from suite.bench.codec import _markdown, measure


def test_the_codec_bench_reports_speed_per_bitrate_and_quantizer(capsys):
    assert BENCHMARKS["codec"] == "suite.bench.codec"
    result = measure(preset="tiny", seconds=0.5, threads=1, repeats=1)
    rows = result["rows"]
    assert {r["quantizer"] for r in rows} == {"rvq", "grvq"}
    assert all(r["rtfx"] > 0 and r["chunk_ms_p95"] >= r["chunk_ms_p50"] > 0 for r in rows)
    # The tiny preset's 6-bit codebooks: 0.3 kbps each, so 0.5 kbps rounds down to 0.3 and
    # the higher bitrates to all 4 codebooks; 2 groups step by 0.6 kbps.
    assert [r["kbps"] for r in rows if r["quantizer"] == "rvq"] == [0.3, 1.2]
    assert [r["kbps"] for r in rows if r["quantizer"] == "grvq"] == [1.2]
    _markdown(result)
    assert "| rvq | 0.3 | 1 |" in capsys.readouterr().out
