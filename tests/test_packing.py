"""Packing short cuts into one example: every cut once, exact resume, the budget kept, only
for heads that allow it, and a packed example loads as one utterance with one transcript."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

import suite
from suite import registry
from suite.bench.sampler import count_tokens, synthetic_cuts
from suite.config import ConfigError, load_recipe
from suite.data.packing import members, pack_cut, pack_rows, packed_lengths
from suite.data.sampling import BucketingSampler, build_sampler
from suite.errors import UserError
from suite.heads.ctc import CtcHead
from suite.tasks.asr.dataset import AsrDataset
from suite.tokenizers import CharTokenizer

MAX_DURATION = 200.0


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    return synthetic_cuts(2000, seed=2)


def batch_ids(sampler: BucketingSampler, epoch: int = 0) -> list[list[str]]:
    """One epoch of batches as the ids of their original cuts."""
    sampler.set_epoch(epoch)
    return [[m.id for c in batch for m in members(c)] for batch in sampler]


def packed(world_size: int = 1, rank: int = 0, **options: object) -> dict[str, object]:
    return dict(
        max_duration=MAX_DURATION, num_buckets=12, pack=True, seed=5, world_size=world_size,
        rank=rank, **options,
    )  # fmt: skip


def test_pack_rows_places_every_short_row_once_within_the_length() -> None:
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 12.0, 500)
    tokens = np.round(durations * 4).astype(int)
    units = pack_rows(durations, 10.0, np.random.default_rng(1), tokens, max_tokens=35)
    rows = np.concatenate(units)
    assert sorted(rows.tolist()) == list(range(500))
    seconds, counts = packed_lengths(durations, tokens, units)
    for unit, total, count in zip(units, seconds, counts, strict=True):
        if len(unit) > 1:
            assert (durations[unit] <= 5.0).all() and total <= 10.0 + 1e-9 and count <= 35
        assert count == tokens[unit].sum() + len(unit) - 1
    assert sum(len(u) > 1 for u in units) > 20
    # Best fit fills examples: without a token limit, on average over 90 % of the length.
    units_by_time = pack_rows(durations, 10.0, np.random.default_rng(1))
    seconds, _ = packed_lengths(durations, None, units_by_time)
    assert seconds[[len(u) > 1 for u in units_by_time]].mean() > 9.0
    # Seeded: the same generator state packs the same way; another one differently.
    again = pack_rows(durations, 10.0, np.random.default_rng(1), tokens, max_tokens=35)
    assert [u.tolist() for u in again] == [u.tolist() for u in units]
    other = pack_rows(durations, 10.0, np.random.default_rng(2), tokens, max_tokens=35)
    assert [u.tolist() for u in other] != [u.tolist() for u in units]


@pytest.mark.parametrize("world_size", [1, 2])
def test_packed_sampler_keeps_every_cut_once_and_the_budget(cuts: CutSet, world_size) -> None:
    per_rank = [
        batch_ids(BucketingSampler(cuts, **packed(world_size, r))) for r in range(world_size)
    ]
    assert len({len(b) for b in per_rank}) == 1
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(seen) == sorted(cuts.ids)
    sampler = BucketingSampler(cuts, **packed())
    sampler.set_epoch(0)
    examples = [example for batch in sampler for example in batch]
    assert len(examples) < len(cuts)
    for batch in BucketingSampler(cuts, **packed()):
        assert len(batch) * max(c.duration for c in batch) <= MAX_DURATION + 1e-6
    multi = [e for e in examples if len(members(e)) > 1]
    assert multi and all(e.duration <= sampler.pack_duration + 1e-6 for e in multi)
    assert sampler.pack_duration == pytest.approx(np.median([c.duration for c in cuts]))


def test_packing_changes_per_epoch_and_resumes_exactly(cuts: CutSet) -> None:
    full = batch_ids(BucketingSampler(cuts, **packed()), epoch=1)
    first = BucketingSampler(cuts, **packed())
    first.set_epoch(1)
    batches = iter(first)
    consumed = [[m.id for c in next(batches) for m in members(c)] for _ in range(9)]
    resumed = BucketingSampler(cuts, **packed())
    resumed.load_state_dict(first.state_dict())
    assert consumed + [[m.id for c in b for m in members(c)] for b in resumed] == full
    assert batch_ids(BucketingSampler(cuts, **packed()), epoch=2) != full
    unpacked = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=5)
    with pytest.raises(UserError, match="buckets"):
        unpacked.load_state_dict(first.state_dict())


def test_2d_streamed_packing_keeps_every_cut_and_token_budget(cuts: CutSet, tmp_path) -> None:
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    options = packed(
        num_token_buckets=3, count_tokens=count_tokens, max_tokens=900, buffer_size=600
    )
    sampler = BucketingSampler(CutSet.from_file(path), **options)
    sampler.set_epoch(0)
    batches = [list(batch) for batch in sampler]
    ids = [m.id for batch in batches for c in batch for m in members(c)]
    assert sorted(ids) == sorted(cuts.ids)
    for batch in batches:
        tokens = [sum(map(count_tokens, members(c))) + len(members(c)) - 1 for c in batch]
        assert len(batch) * max(tokens) <= 900


def test_saved_runs_keep_their_fingerprint(cuts: CutSet) -> None:
    sampler = BucketingSampler(cuts, MAX_DURATION, num_buckets=12)
    plan = (sampler.buckets, MAX_DURATION, None, None)
    expected = hashlib.sha1(repr(plan).encode()).hexdigest()[:16]
    assert sampler.state_dict()["buckets"] == expected


def test_pack_options_are_checked(cuts: CutSet) -> None:
    with pytest.raises(UserError, match="set pack: true"):
        BucketingSampler(cuts, MAX_DURATION, pack_duration=5.0)
    with pytest.raises(UserError, match="last duration bin"):
        BucketingSampler(
            cuts, MAX_DURATION, duration_bins=[20.0, 40.0], pack=True, pack_duration=50
        )
    with pytest.raises(UserError, match="budget"):
        BucketingSampler(cuts, 10.0, duration_bins=[20.0, 40.0], pack=True, pack_duration=15.0)
    sampler = build_sampler(cuts, {"name": "suite_bucketing", "pack": True}, MAX_DURATION)
    assert sampler.pack_duration is not None


def recipe_file(tmp_path, heads: dict[str, object], pack: bool = True):
    path = tmp_path / "recipe.yaml"
    raw = {
        "task": "asr",
        "data": {"sampler": {"name": "suite_bucketing", "pack": pack}},
        "model": {"heads": heads},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def test_only_heads_that_allow_packing_may_pack(tmp_path, monkeypatch) -> None:
    allowed = [name for name in suite.list_heads() if registry.lookup("head", name).allows_packing]
    assert {"ctc", "rnnt"} <= set(allowed)
    for name in suite.list_heads():  # every head states it, inherited or its own
        assert isinstance(registry.lookup("head", name).allows_packing, bool)
    heads = {"ctc": {"name": "ctc"}, "rnnt": {"name": "rnnt"}}
    assert load_recipe(recipe_file(tmp_path, heads)).data.sampler["pack"] is True
    monkeypatch.setattr(CtcHead, "allows_packing", False)
    with pytest.raises(ConfigError, match=r"head ctc \(ctc\) does not allow.*allow it: .*rnnt"):
        load_recipe(recipe_file(tmp_path, heads))
    assert load_recipe(recipe_file(tmp_path, heads, pack=False))


def write_wav(path, seconds: float, sample_rate: int = 16000) -> Recording:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate)
    return Recording.from_file(path)


def test_a_packed_example_loads_as_one_utterance(tmp_path) -> None:
    parts = []
    for i, (seconds, text) in enumerate([(0.5, "one"), (0.7, "two words"), (0.3, "three")]):
        recording = write_wav(tmp_path / f"{i}.wav", seconds)
        supervision = SupervisionSegment(
            id=f"s{i}", recording_id=recording.id, start=0, duration=seconds, text=text
        )
        cut = MonoCut(
            id=f"c{i}", start=0, duration=seconds, channel=0, recording=recording,
            supervisions=[supervision],
        )  # fmt: skip
        parts.append(cut)
    example = pack_cut(parts)
    assert example.id == "c0+c1+c2" and [m.id for m in members(example)] == ["c0", "c1", "c2"]
    assert example.duration == pytest.approx(1.5)
    frontend = registry.create("frontend", "fbank")
    dataset = AsrDataset(CharTokenizer(), frontend)
    batch = dataset[CutSet([example, parts[1]])]
    assert batch.texts == ["one two words three", "two words"]
    assert batch.target_lengths.tolist() == [len("one two words three"), len("two words")]
    assert abs(int(batch.lengths[0]) - 150) <= 3  # frames of 1.5 s at a 10 ms hop
    audio = example.load_audio()  # (1, S): the members' samples one after another
    np.testing.assert_allclose(audio[0, 8000:19200], parts[1].load_audio()[0], atol=1e-6)
    assert torch.isfinite(batch.inputs).all()
