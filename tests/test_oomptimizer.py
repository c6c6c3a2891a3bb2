"""``suite data oomptimize``: the batch-size search against a known memory model, the recipe it
writes (read back and used by the sampler), real measurements on CPU, and on CUDA when there
is a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lhotse import CutSet

from suite.bench.sampler import metadata_cut
from suite.cli import main
from suite.config import load_recipe, recipe_from_dict
from suite.data.bucketing import Buckets
from suite.data.packing import members
from suite.data.planning import search_batch_sizes
from suite.data.sampling import build_sampler
from suite.errors import UserError
from suite.tokenizers import CharTokenizer
from suite.train.oomptimizer import CpuProbe, oomptimize, oomptimized_recipe

CAP = 8.0  # GiB of the memory model below


class MemoryModel:
    """A deterministic probe: ``1 + size x (0.1 duration + 0.01 tokens)`` GiB under ``CAP``."""

    def __init__(self, cap: float = CAP) -> None:
        self.cap, self.calls = cap, []

    @staticmethod
    def peak(duration: float, tokens: int | None, size: int) -> float:
        return 1.0 + size * (0.1 * duration + 0.01 * (tokens or 0))

    def __call__(self, duration: float, tokens: int | None, size: int) -> bool:
        self.calls.append((duration, tokens, size))
        return self.peak(duration, tokens, size) <= self.cap

    def largest(self, duration: float, tokens: int | None, limit: int) -> int:
        """The answer by brute force."""
        return max([n for n in range(1, limit + 1) if self(duration, tokens, n)], default=0)


def test_search_finds_the_largest_size_per_bucket_in_few_probes() -> None:
    buckets = Buckets(tuple(np.round(np.linspace(1.0, 10.0, 30), 2)))
    probe = MemoryModel()
    sizes = search_batch_sizes(buckets, probe, max_batch_size=512)
    expected = [MemoryModel().largest(d, None, 512) for d in buckets.duration_bins]
    assert sizes == expected
    assert sizes == sorted(sizes, reverse=True)  # longer buckets never take more
    for d, n in zip(buckets.duration_bins, sizes, strict=True):  # the cap holds, exactly
        assert MemoryModel.peak(d, None, n) <= CAP < MemoryModel.peak(d, None, n + 1)
    # A separate doubling-and-bisection search per bucket costs up to 2 log2(70) probes each;
    # starting from the shorter bucket's size cuts that to about three (84 here).
    assert len(probe.calls) <= 3 * len(sizes)
    narrow = MemoryModel()  # bins as narrow as near the mode of a real corpus: one probe each
    assert search_batch_sizes(Buckets(tuple(np.linspace(12.0, 16.0, 100))), narrow)
    assert len(narrow.calls) <= 110
    # Each bucket is probed at its upper edge, and never twice at one size.
    assert len(set(probe.calls)) == len(probe.calls)
    assert {d for d, _, _ in probe.calls} == set(buckets.duration_bins)


def test_search_2d_uses_token_counts_and_max_batch_size() -> None:
    buckets = Buckets((2.0, 4.0, 6.0), ((10, 200), (30, 400), (50, 600)))
    sizes = search_batch_sizes(buckets, MemoryModel(), max_batch_size=1000)
    edges_d, edges_t = buckets.cell_edges()
    expected = [
        MemoryModel().largest(d, int(t), 1000) for d, t in zip(edges_d, edges_t, strict=True)
    ]
    assert sizes == expected
    tokens = [5] * buckets.num_cells  # probe with other token counts than the edges
    probe = MemoryModel()
    sizes = search_batch_sizes(buckets, probe, max_batch_size=1000, tokens=tokens)
    assert sizes == [MemoryModel().largest(d, 5, 1000) for d in edges_d]
    assert {t for _, t, _ in probe.calls} == {5}
    ample = MemoryModel(cap=1e9)
    assert search_batch_sizes(buckets, ample, max_batch_size=16) == [16] * 6
    # 1, 2, 4, 8, 16 for the first cell; then at most one confirming probe per cell.
    assert len(ample.calls) <= 5 + 5


def test_search_says_which_bucket_cannot_fit_one_cut() -> None:
    with pytest.raises(UserError, match=r"one cut of 80.00 s does not fit .*too_long=drop"):
        search_batch_sizes(Buckets((5.0, 80.0)), MemoryModel())
    with pytest.raises(UserError, match="one count per cell"):
        search_batch_sizes(Buckets((5.0, 10.0)), MemoryModel(), tokens=[3])


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CTC model on 40 metadata-only cuts (the probes synthesize their batches)."""
    root = tmp_path_factory.mktemp("oom")
    cuts = CutSet(
        [metadata_cut(i, 1.0 + (i % 7) * 0.5, "hello world " * (1 + i % 3)) for i in range(40)]
    )
    cuts.to_file(root / "cuts.jsonl.gz")
    recipe = {
        "task": "asr",
        "data": {
            "corpus_dir": str(root),
            "train": "cuts.jsonl.gz",
            "max_duration": 12.0,
            "sampler": {"name": "suite_bucketing", "num_buckets": 2, "pack": True},
        },
        "model": {
            "encoder": {"name": "conformer", "preset": "tiny", "subsampling_factor": 4},
            "heads": {"ctc": {"name": "ctc"}},
            "tokenizer": {"name": "char"},
        },
        "train": {"out_dir": str(root / "run"), "device": "cpu", "ema_decay": 0.999},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root / "recipe.yaml"


def test_written_recipe_loads_and_its_sizes_drive_the_sampler(tiny_recipe: Path) -> None:
    recipe = load_recipe(tiny_recipe)
    raw = yaml.safe_load(tiny_recipe.read_text())
    buckets = Buckets((2.5, 4.0))
    out = oomptimized_recipe(raw, recipe, buckets, [6, 3])
    spec = out["data"]["sampler"]
    assert spec == {
        "name": "suite_bucketing",
        "duration_bins": [2.5, 4.0],
        "bucket_batch_size": [6, 3],
        "pack": True,  # other options stay
    }
    assert out["data"]["max_duration"] == 15.0  # 6 x 2.5 s > 12 s: raised so that sizes bind
    assert out["model"] == raw["model"] and out["train"] == raw["train"]
    loaded = recipe_from_dict(out)
    cuts = CutSet.from_file(loaded.data.manifest("train"))
    sampler = build_sampler(cuts, loaded.data.sampler, loaded.data.max_duration)
    batches = [list(batch) for batch in sampler]  # of examples, some of them packed cuts
    assert sorted(m.id for b in batches for c in b for m in members(c)) == sorted(cuts.ids)
    bucket = sampler.buckets.assign(np.array([max(c.duration for c in b) for b in batches]))
    assert all(len(b) <= [6, 3][k] for b, k in zip(batches, bucket, strict=True))
    assert max(len(b) for b in batches) == 6  # the measured size, not the budget, binds
    assert oomptimized_recipe(raw, recipe, buckets, [2, 1])["data"]["max_duration"] == 12.0


def test_cli_measures_on_cpu_and_writes_the_recipe(tiny_recipe: Path, tmp_path, capsys) -> None:
    out = tmp_path / "measured.yaml"
    argv = ["data", "oomptimize", str(tiny_recipe), "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--memory-cap-gb", "8", "--max-batch-size", "4"]) == 0
    log = capsys.readouterr().err
    assert "GiB (fits)" in log and "batch sizes (4 probes): [4, 4]" in log
    recipe = load_recipe(out)
    assert recipe.data.sampler["bucket_batch_size"] == [4, 4]
    assert recipe.data.sampler["duration_bins"] == [2.5, 4.0]
    assert out.read_text().startswith(f"# {tiny_recipe} with data.sampler.bucket_batch_size")
    # A cap below what Python and torch alone hold: the first probe fails, and says so.
    assert main([*argv, "--memory-cap-gb", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "one cut of 2.50 s and 35 tokens does not fit" in err
    assert "peaked at" in err and "against a cap of 0.05 GiB" in err


def test_cpu_probe_measures_real_peak_memory(tiny_recipe: Path, tmp_path) -> None:
    CharTokenizer().save(tmp_path / "tokenizer")
    probe = CpuProbe(load_recipe(tiny_recipe), tmp_path / "tokenizer", cap=8 * 2**30, log=str)
    assert probe(4.0, 35, 1) and probe(4.0, 35, 16)
    small, large = (p.peak for p in probe.probes)
    assert small > 100 * 2**20  # the interpreter and torch are part of a process's peak
    assert large - small > 50 * 2**20  # activations of 16 cuts of 4 s
    tight = CpuProbe(load_recipe(tiny_recipe), tmp_path / "tokenizer", cap=small, log=str)
    assert not tight(4.0, 35, 16)


def test_clear_errors_before_measuring(tiny_recipe: Path, tmp_path, capsys) -> None:
    if not torch.cuda.is_available():
        assert main(["data", "oomptimize", str(tiny_recipe), "--device", "cuda"]) == 2
        assert "--device cpu" in capsys.readouterr().err
    other = tmp_path / "lhotse.yaml"
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["data"]["sampler"] = {"name": "dynamic_bucketing", "num_buckets": 3}
    other.write_text(yaml.safe_dump(raw))
    assert main(["data", "oomptimize", str(other), "--device", "cpu"]) == 2
    assert "suite_bucketing" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures CUDA memory; needs a GPU")
def test_measures_on_cuda(tiny_recipe: Path, tmp_path) -> None:
    lines: list[str] = []
    out = oomptimize(
        tiny_recipe,
        out=tmp_path / "cuda.yaml",
        device="cuda",
        memory_cap_gb=2.0,
        max_batch_size=1024,
        num_buckets=3,
        log=lines.append,
    )
    sizes = load_recipe(out).data.sampler["bucket_batch_size"]
    assert len(sizes) == 3 and all(n >= 1 for n in sizes)
    assert sizes == sorted(sizes, reverse=True)
    peaks = [line for line in lines if "GiB (fits)" in line]
    assert peaks and all(float(line.split(": ")[1].split()[0]) <= 2.0 for line in peaks)
