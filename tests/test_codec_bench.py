"""``suite bench codec`` measures speed per bitrate and quantizer; shown on the tiny preset."""

from __future__ import annotations

import pytest

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


def _one_utterance_manifest(tmp_path):
    import numpy as np
    import soundfile
    from lhotse import CutSet, Recording

    t = np.arange(32000) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.5 * t)) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    wave = 0.2 * voice * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    soundfile.write(tmp_path / "a.wav", wave.astype(np.float32), 16000)
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_manifests(recordings=[Recording.from_file(tmp_path / "a.wav")]).to_file(path)
    return path


def test_the_quality_bench_skips_missing_tools_with_a_line(tmp_path, monkeypatch, capsys):
    from suite.bench import codec_quality

    monkeypatch.setattr(codec_quality, "_ffmpeg_encoders", lambda: "")  # as without ffmpeg
    manifest = _one_utterance_manifest(tmp_path)
    result = codec_quality.measure_quality(str(tmp_path / "none"), str(manifest), 1)
    assert result["rows"] == []
    skipped = "\n".join(result["skipped"])
    assert "no codec package at" in skipped and "apt-get install ffmpeg" in skipped
    codec_quality.markdown(result)
    assert "Skipped: opus: ffmpeg not found" in capsys.readouterr().out


def test_opus_and_codec2_rows_score_the_round_trip(tmp_path):
    from suite.bench import codec_quality

    if codec_quality.ffmpeg_missing("libopus") or codec_quality.ffmpeg_missing("libcodec2"):
        pytest.skip("ffmpeg with libopus and libcodec2 not installed (apt-get install ffmpeg)")
    manifest = _one_utterance_manifest(tmp_path)
    result = codec_quality.measure_quality(str(tmp_path / "none"), str(manifest), 1)
    rows = {(r["system"], r["kbps"]): r for r in result["rows"]}
    assert set(rows) == {("opus", 6.0), ("opus", 8.0), ("opus", 12.0)} | {
        ("codec2", 1.2),
        ("codec2", 1.6),
        ("codec2", 3.2),
    }
    for row in rows.values():
        assert row["lag_ms"] <= 50 and -50 < row["si_sdr"] < 60
        assert 0 <= row.get("stoi", 0.5) <= 1
    # Codec2's payload is its mode's bitrate (plus a 7-byte header over 2 s).
    assert rows[("codec2", 1.2)]["measured_kbps"] == pytest.approx(1.2, abs=0.1)
    assert rows[("opus", 12.0)]["mel_distance"] < rows[("codec2", 1.2)]["mel_distance"]
