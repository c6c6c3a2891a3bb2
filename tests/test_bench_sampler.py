"""``suite bench sampler`` on a small cut set: the JSON it prints and what each entry holds."""

from __future__ import annotations

import json

import numpy as np

import suite.bench.sampler as bench
from suite.cli import main

FIELDS = {"padding_fraction", "token_padding_fraction", "batches", "seconds"}


def test_durations_look_like_librispeech() -> None:
    durations = bench.librispeech_like_durations(50_000, np.random.default_rng(0))
    assert durations.min() >= 1.0 and durations.max() <= 35.0
    counts, edges = np.histogram(durations, bins=np.arange(1, 36))
    assert 14 <= edges[np.argmax(counts)] <= 16  # the mode
    assert np.mean(durations < 10) > 0.2  # the long tail of short cuts


def test_json_has_every_sampler_and_field(monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench, "NUM_CUTS", 1500)
    assert main(["bench", "sampler", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"naive", "lhotse", "suite"}
    for name, entry in results.items():
        assert FIELDS <= set(entry), name
        assert entry["cuts"] == 1500, f"{name} lost or repeated cuts"
        assert 0.0 <= entry["padding_fraction"] < 1.0
        assert 0.0 <= entry["token_padding_fraction"] < 1.0
        assert entry["batches"] > 0 and entry["seconds"] >= 0.0


def test_markdown_section(capsys) -> None:
    bench.main(json_output=False, num_cuts=800)
    out = capsys.readouterr().out
    assert out.startswith("## Sampler")
    assert "nproc" in out and "| suite BucketingSampler 2D" in out
    packed = next(line for line in out.splitlines() if "packed" in line)
    examples_per_batch = float(packed.split("|")[6])
    assert 0 < examples_per_batch


def test_packing_keeps_every_cut_in_fewer_examples() -> None:
    cuts = bench.synthetic_cuts(1500)
    plain = bench.measure(bench.samplers(bench.MAX_DURATION, 0)["suite"], cuts)
    packed = bench.measure(bench.samplers(bench.MAX_DURATION, 0)["suite_packed"], cuts)
    assert plain["cuts"] == packed["cuts"] == plain["examples"] == 1500
    assert packed["examples"] < 1500
