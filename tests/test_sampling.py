"""BucketingSampler and bucket estimation: every cut once per epoch on any number of ranks,
exact resume, seeded order, bins on known distributions, and a clear end for cuts that fit
no batch."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import yaml
from lhotse import CutSet

from suite.bench.sampler import count_tokens, metadata_cut, synthetic_cuts
from suite.cli import main
from suite.data.bucketing import Buckets, estimate_bins, estimate_buckets
from suite.data.planning import bucket_batch_sizes, padded_cost, search_batch_sizes
from suite.data.sampling import BucketingSampler, build_sampler
from suite.errors import UserError
from suite.tokenizers import CharTokenizer
from suite.train.trainer import _RunBatches

MAX_DURATION = 200.0


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    return synthetic_cuts(3000, seed=1)


def epoch_ids(sampler: BucketingSampler, epoch: int = 0) -> list[list[str]]:
    sampler.set_epoch(epoch)
    return [[c.id for c in batch] for batch in sampler]


def ranks(make: Callable[[int, int], BucketingSampler], world_size: int) -> list[list[list[str]]]:
    """One epoch of batch ids for every simulated rank."""
    return [epoch_ids(make(world_size, rank)) for rank in range(world_size)]


def check_exactly_once(per_rank: list[list[list[str]]], all_ids: list[str]) -> None:
    lengths = {len(batches) for batches in per_rank}
    assert len(lengths) == 1, f"ranks got different numbers of batches: {lengths}"
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert all(batches and all(batch for batch in batches) for batches in per_rank)
    assert len(seen) == len(set(seen)), "a cut was repeated"
    assert sorted(seen) == sorted(all_ids), "a cut was lost"


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_every_cut_once_across_ranks_same_bucket_per_step(cuts: CutSet, world_size: int) -> None:
    def make(w: int, r: int) -> BucketingSampler:
        return BucketingSampler(cuts, MAX_DURATION, num_buckets=12, world_size=w, rank=r, seed=3)

    per_rank = ranks(make, world_size)
    check_exactly_once(per_rank, list(cuts.ids))
    sampler = make(world_size, 0)
    durations = {c.id: c.duration for c in cuts}
    for step in zip(*per_rank, strict=True):
        longest = [max(durations[i] for i in batch) for batch in step]
        # Every batch stays within the padded budget ...
        for batch, top in zip(step, longest, strict=True):
            assert len(batch) * top <= MAX_DURATION + 1e-6
        # ... and all ranks draw this step from the same bucket (their longest cut's bucket).
        assert len(set(sampler.buckets.assign(np.array(longest)).tolist())) == 1


@pytest.mark.parametrize("world_size", [2, 4])
def test_2d_ranks_step_on_the_same_duration_bucket(cuts: CutSet, world_size: int) -> None:
    def make(w: int, r: int) -> BucketingSampler:
        return BucketingSampler(
            cuts, MAX_DURATION, num_buckets=8, num_token_buckets=3, count_tokens=count_tokens,
            world_size=w, rank=r, seed=4,
        )  # fmt: skip

    per_rank = ranks(make, world_size)
    check_exactly_once(per_rank, list(cuts.ids))
    durations = {c.id: c.duration for c in cuts}
    edges = np.array(make(1, 0).buckets.duration_bins)
    for step in zip(*per_rank, strict=True):
        longest = [max(durations[i] for i in batch) for batch in step]
        assert len(set(np.searchsorted(edges, longest).tolist())) == 1


def test_2d_buckets_and_streamed_lazy_manifest_keep_every_cut(cuts: CutSet, tmp_path) -> None:
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    lazy = CutSet.from_file(path)
    assert lazy.is_lazy

    def make(w: int, r: int) -> BucketingSampler:
        return BucketingSampler(
            lazy,
            MAX_DURATION,
            num_buckets=8,
            num_token_buckets=3,
            count_tokens=count_tokens,
            max_tokens=1200,
            buffer_size=700,
            world_size=w,
            rank=r,
        )

    per_rank = ranks(make, 2)
    check_exactly_once(per_rank, list(cuts.ids))
    tokens = {c.id: count_tokens(c) for c in cuts}
    for batch in (b for batches in per_rank for b in batches):
        assert len(batch) * max(tokens[i] for i in batch) <= 1200


def test_lazy_manifest_gives_the_same_batches_as_eager(cuts: CutSet, tmp_path) -> None:
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    eager = epoch_ids(BucketingSampler(cuts, MAX_DURATION, num_buckets=10, seed=5), epoch=2)
    lazy = epoch_ids(
        BucketingSampler(CutSet.from_file(path), MAX_DURATION, num_buckets=10, seed=5), epoch=2
    )
    assert eager == lazy


@pytest.mark.parametrize("world_size,step", [(1, 0), (1, 37), (2, 11), (4, 5)])
def test_state_dict_resumes_mid_epoch_exactly(cuts: CutSet, world_size: int, step: int) -> None:
    def make(rank: int) -> BucketingSampler:
        return BucketingSampler(
            cuts, MAX_DURATION, num_buckets=12, seed=7, world_size=world_size, rank=rank
        )

    for rank in range(world_size):
        full = epoch_ids(make(rank), epoch=1)
        first = make(rank)
        first.set_epoch(1)
        batches = iter(first)
        consumed = [[c.id for c in next(batches)] for _ in range(step)]
        state = first.state_dict()
        resumed = make(rank)
        resumed.load_state_dict(state)
        rest = [[c.id for c in batch] for batch in resumed]
        assert consumed + rest == full
        # The restored position is used once: the next epoch starts from its beginning.
        assert epoch_ids(resumed, epoch=2) == epoch_ids(make(rank), epoch=2)


def test_trainer_skip_resume_continues_the_same_batches(cuts: CutSet) -> None:
    sampler = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=2)
    full = epoch_ids(sampler, epoch=3)
    again = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=2)
    resumed = []
    for batch, _, (epoch, _) in _RunBatches(again, epoch=3, skip=23, seed=0, manifest="train"):
        if epoch != 3:
            break
        resumed.append([c.id for c in batch])
    assert resumed == full[23:]


def test_resume_refuses_other_settings(cuts: CutSet) -> None:
    state = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=2).state_dict()
    other = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=2, world_size=2, rank=0)
    with pytest.raises(UserError, match="world_size"):
        other.load_state_dict(state)


def test_seeded_order(cuts: CutSet) -> None:
    def make(seed: int) -> BucketingSampler:
        return BucketingSampler(cuts, MAX_DURATION, num_buckets=12, seed=seed)

    first = epoch_ids(make(0), epoch=0)
    assert epoch_ids(make(0), epoch=0) == first
    assert epoch_ids(make(0), epoch=1) != first
    assert epoch_ids(make(1), epoch=0) != first
    assert sorted(map(sorted, epoch_ids(make(0), epoch=1))) != sorted(map(sorted, first))
    unshuffled = BucketingSampler(cuts, MAX_DURATION, num_buckets=12, shuffle=False)
    assert epoch_ids(unshuffled, 0) == epoch_ids(unshuffled, 1)


def test_estimated_bins_on_known_distributions() -> None:
    assert estimate_bins(np.arange(1, 101), 4).duration_bins == (25.0, 50.0, 75.0, 100.0)
    uniform = np.random.default_rng(0).uniform(0.0, 10.0, 100_000)
    edges = np.array(estimate_bins(uniform, 10).duration_bins)
    np.testing.assert_allclose(edges, np.arange(1, 11), atol=0.05)
    # 2D: durations 1..8 s, 100 cuts each with tokens 100 d + 0..99.
    durations = np.repeat(np.arange(1.0, 9.0), 100)
    tokens = (durations * 100 + np.tile(np.arange(100), 8)).astype(int)
    buckets = estimate_bins(durations, 4, tokens, num_token_buckets=2)
    assert buckets.duration_bins == (2.0, 4.0, 6.0, 8.0)
    assert buckets.token_bins == ((199, 299), (399, 499), (599, 699), (799, 899))
    # Cells are numbered in snake order: tokens up in even buckets, down in odd ones.
    cells = buckets.assign(np.array([1.0, 2.0, 3.0, 4.0, 9.0]), np.array([100, 250, 350, 450, 1]))
    assert cells.tolist() == [0, 1, 3, 2, -1]


def test_estimate_buckets_from_cuts_and_cli(cuts: CutSet, tmp_path, capsys) -> None:
    durations = np.array([c.duration for c in cuts])
    assert estimate_buckets(cuts, 20) == estimate_bins(durations, 20)
    assert estimate_buckets(cuts, 5, 3, count_tokens=count_tokens).token_bins is not None
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    assert main(["data", "estimate-buckets", str(path), "--buckets", "20"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)["data"]["sampler"]
    assert spec["name"] == "suite_bucketing"
    assert spec["duration_bins"] == list(estimate_bins(durations, 20).duration_bins)
    sampler = build_sampler(cuts, spec, MAX_DURATION)
    check_exactly_once([epoch_ids(sampler)], list(cuts.ids))
    assert main(["data", "estimate-buckets", str(path), "--token-buckets", "3"]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_cli_2d_bins_with_a_tokenizer_folder(tmp_path, capsys) -> None:
    texted = CutSet([metadata_cut(i, 1.0 + i % 9, "ab " * (1 + i % 13)) for i in range(200)])
    texted.to_file(tmp_path / "cuts.jsonl.gz")
    CharTokenizer().save(tmp_path / "tokenizer")
    argv = ["data", "estimate-buckets", str(tmp_path / "cuts.jsonl.gz"), "--buckets", "3"]
    argv += ["--token-buckets", "2", "--tokenizer", str(tmp_path / "tokenizer")]
    assert main([*argv, "--max-duration", "60"]) == 0
    out = capsys.readouterr().out
    spec = yaml.safe_load(out)["data"]["sampler"]
    assert spec["duration_bins"] == [3.0, 6.0, 9.0]
    assert len(spec["token_bins"]) == 3 and all(len(row) == 2 for row in spec["token_bins"])
    assert "# smallest batch per cell at data.max_duration=60.0" in out


def test_batch_sizes_from_budget_and_measured_search() -> None:
    buckets = Buckets((5.0, 10.0))
    assert bucket_batch_sizes(buckets, 100.0) == [20, 10]
    # cost 5 + 25/10 = 7.5 and 10 + 100/10 = 20 effective seconds
    assert bucket_batch_sizes(buckets, 100.0, quadratic_duration=10.0) == [13, 5]

    def fits(duration: float, tokens: int | None, batch_size: int) -> bool:
        return 1.0 + 0.1 * duration * batch_size <= 8.0  # a memory model: GiB under a cap

    assert search_batch_sizes(buckets, fits) == [14, 7]
    with pytest.raises(UserError, match="does not fit"):
        search_batch_sizes(Buckets((100.0,)), fits)


def test_quadratic_cost_and_per_bucket_caps(cuts: CutSet) -> None:
    sampler = BucketingSampler(
        cuts, MAX_DURATION, num_buckets=6, quadratic_duration=20.0, bucket_batch_size=[4] * 6
    )
    batches = [list(b) for b in sampler]
    assert sum(len(b) for b in batches) == len(cuts)
    for batch in batches:
        assert len(batch) <= 4
        cost = padded_cost(np.array([c.duration for c in batch]), 20.0)
        assert len(batch) * cost.max() <= MAX_DURATION + 1e-6


def test_cut_longer_than_every_bucket_errors_or_is_dropped() -> None:
    cuts = CutSet([metadata_cut(i, d) for i, d in enumerate([1.0, 2.0, 4.0, 12.0, 3.0, 5.0])])
    sampler = BucketingSampler(cuts, 60.0, duration_bins=[5.0, 10.0])
    with pytest.raises(UserError, match="cut3 .*12.00 s.*too_long=drop"):
        list(sampler)
    dropping = BucketingSampler(cuts, 60.0, duration_bins=[5.0, 10.0], too_long="drop")
    with pytest.warns(UserWarning, match="dropping 1 cuts"):
        ids = [c.id for batch in dropping for c in batch]
    assert sorted(ids) == ["cut0", "cut1", "cut2", "cut4", "cut5"]
    assert dropping.diagnostics.discarded_cuts == 1
    # With estimated bins the last bucket is open; a cut longer than the budget still errors.
    with pytest.raises(UserError, match="fits no batch"):
        list(BucketingSampler(cuts, 10.0, num_buckets=3))


def test_fewer_cuts_than_ranks_end_without_hanging() -> None:
    nine = CutSet([metadata_cut(i, 1.0 + i / 10) for i in range(9)])
    per_rank = ranks(lambda w, r: BucketingSampler(nine, 100.0, world_size=w, rank=r), 4)
    check_exactly_once(per_rank, list(nine.ids))
    three = CutSet([metadata_cut(i, 1.0) for i in range(3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_rank = ranks(lambda w, r: BucketingSampler(three, 100.0, world_size=w, rank=r), 4)
    assert per_rank == [[]] * 4
    assert any("cannot be split over 4 ranks" in str(w.message) for w in caught)


def test_build_sampler_names_and_tokenizer(cuts: CutSet) -> None:
    spec = {"name": "suite_bucketing", "num_buckets": 10}
    assert isinstance(build_sampler(cuts, spec, MAX_DURATION), BucketingSampler)
    with pytest.raises(UserError, match="bad option"):
        build_sampler(cuts, {"name": "suite_bucketing", "bukets": 3}, MAX_DURATION)
    two_d = {"name": "suite_bucketing", "num_buckets": 4, "num_token_buckets": 2}
    with pytest.raises(UserError, match="tokenizer"):
        build_sampler(cuts, two_d, MAX_DURATION)
    texted = CutSet([metadata_cut(i, 1.0 + i % 9, "ab " * (1 + i % 13)) for i in range(400)])
    sampler = build_sampler(texted, two_d, 40.0, tokenizer=CharTokenizer())
    check_exactly_once([epoch_ids(sampler)], list(texted.ids))
    assert len(sampler.buckets.token_bins) == len(sampler.buckets.duration_bins)
    # It pickles mid-epoch (DataLoader workers); the copy restarts the epoch.
    iter(sampler)
    next(sampler)
    copy = pickle.loads(pickle.dumps(sampler))
    copy.set_epoch(0)
    assert epoch_ids(copy) == epoch_ids(sampler)
