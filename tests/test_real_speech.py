"""Weighted mixes of training manifests, the real-speech manifests, and scores per source."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from suite.cli import main
from suite.config import ConfigError, load_recipe
from suite.data.mixing import MixSampler, MixSource, WeightedMix, share_counts
from suite.data.real_speech import prepare_real_speech, source_cuts
from suite.data.sampling import build_sampler
from suite.data.shared import shared_data_dir
from suite.tasks.asr.evaluation import cut_row
from suite.train import Trainer

RECIPE = Path(__file__).resolve().parents[1] / "recipes/asr/espeak_conformer_ctc.yaml"
SR = 16000


def cuts_of(prefix: str, n: int, start: int = 0) -> list:
    rng = np.random.default_rng(start)
    return [
        dummy_cut(start + i, duration=float(rng.uniform(0.5, 3.0))).with_id(f"{prefix}-{i}")
        for i in range(n)
    ]


def test_shares_follow_the_weights_exactly():
    assert share_counts([1, 1, 2], 10) == [3, 2, 5]  # ties go to the earlier source
    assert sum(share_counts([0.3, 0.7, 1e-9], 1001)) == 1001
    sources = [
        MixSource("a", cuts_of("a", 10), 1.0),
        MixSource("b", cuts_of("b", 50, 100), 1.0),
        MixSource("c", cuts_of("c", 5, 200), 2.0),
    ]
    mix = WeightedMix(sources, seed=0)
    for epoch in range(3):
        cuts = mix.epoch_cuts(epoch)
        assert len(cuts) == 65 and len({c.id for c in cuts}) == 65  # repeats get new ids
        counts = Counter(c.id.split("-")[0] for c in cuts)
        assert counts == {"a": 16, "b": 16, "c": 33}  # 65 * (1/4, 1/4, 1/2), rounded
        # Oversampled: every cut of a as often as it fits, the rest at random; c: 6 or 7 times.
        per_cut = Counter(c.id.split("_rep")[0] for c in cuts)
        assert {per_cut[f"a-{i}"] for i in range(10)} <= {1, 2}
        assert {per_cut[f"c-{i}"] for i in range(5)} <= {6, 7}
    assert [c.id for c in mix.epoch_cuts(1)] == [c.id for c in WeightedMix(sources).epoch_cuts(1)]
    # An undersampled source shows other cuts in other epochs.
    b = [{c.id for c in mix.epoch_cuts(e) if c.id.startswith("b")} for e in range(2)]
    assert b[0] != b[1]
    with pytest.raises(Exception, match="weight"):
        WeightedMix([MixSource("a", cuts_of("a", 3), 0.0)])


@pytest.mark.parametrize("name", ["suite_bucketing", "dynamic_bucketing", "simple"])
def test_mixed_batches_are_seeded_and_resume_exactly(name):
    def sampler() -> MixSampler:
        mix = WeightedMix(
            [MixSource("a", cuts_of("a", 40), 3.0), MixSource("b", cuts_of("b", 8, 50), 1.0)],
            seed=7,
        )
        spec = {"name": name, **({"num_buckets": 4} if name != "simple" else {})}
        return MixSampler(mix, build_sampler(CutSet(mix), spec, max_duration=8.0, seed=7))

    def epoch(s: MixSampler, e: int) -> list[list[str]]:
        s.set_epoch(e)
        return [[c.id for c in batch] for batch in s]

    first, again = sampler(), sampler()
    batches = epoch(first, 1)
    assert batches == epoch(again, 1)  # same seed, same batches
    ids = [i for batch in batches for i in batch]
    assert sorted(ids) == sorted(c.id for c in first.mix.epoch_cuts(1))
    assert Counter(i.split("-")[0] for i in ids) == {"a": 36, "b": 12}
    assert batches != epoch(first, 2)
    resumed = sampler()  # a new process: set the epoch, skip what was consumed
    resumed.set_epoch(1)
    assert [[c.id for c in b] for b in list(resumed)[3:]] == batches[3:]


def test_recipe_takes_a_mix_and_checks_it(tmp_path):
    mix = "[{manifest: a.jsonl.gz, weight: 2}, {manifest: /abs/b.jsonl.gz}]"
    recipe = load_recipe(RECIPE, [f"data.corpus_dir={tmp_path}", f"data.train={mix}"])
    assert recipe.data.sources("train") == [
        (tmp_path / "a.jsonl.gz", 2.0),
        (Path("/abs/b.jsonl.gz"), 1.0),
    ]
    assert recipe.data.manifest("train") == tmp_path / "a.jsonl.gz"
    for bad, match in [
        ("[{manifest: a.jsonl.gz, wieght: 2}]", "manifest: PATH, weight: W"),
        ("[{manifest: a.jsonl.gz, weight: -1}]", "weight' must be a number >= 0"),
        ("[{manifest: a.jsonl.gz, weight: 0}]", "weight > 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_recipe(RECIPE, [f"data.train={bad}"])


def write_pack(root: Path, source: str, split: str, items: list[tuple[str, str]]) -> None:
    """A source folder laid out as the shared pack's speech-real: relative audio paths."""
    folder = root / source
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(items))
    recordings, supervisions = [], []
    for name, text in items:
        samples = rng.normal(0, 0.1, int(0.6 * SR)).astype(np.float32)
        sf.write(folder / "audio" / f"{name}.wav", samples, SR)
        rec_id = f"{source}-{name}"
        recordings.append(
            {
                "id": rec_id,
                "sources": [
                    {"type": "file", "channels": [0], "source": f"{source}/audio/{name}.wav"}
                ],
                "sampling_rate": SR,
                "num_samples": len(samples),
                "duration": len(samples) / SR,
                "channel_ids": [0],
            }
        )
        supervisions.append(
            {
                "id": rec_id,
                "recording_id": rec_id,
                "start": 0.0,
                "duration": len(samples) / SR,
                "channel": 0,
                "text": text,
                "language": "English",
                "speaker": f"{source}-spk",
            }
        )
    for kind, rows in (("recordings", recordings), ("supervisions", supervisions)):
        with gzip.open(folder / f"{source}_{kind}_{split}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


@pytest.fixture()
def real_pack(tmp_path) -> Path:
    root = tmp_path / "speech-real"
    write_pack(root, "alpha", "train", [("a1", "HELLO WORLD"), ("a2", "IT'S 2 CATS")] * 1)
    write_pack(root, "alpha", "test", [("a3", "Good morning.")])
    write_pack(root, "beta", "train", [(f"b{i}", "zero") for i in range(4)])
    write_pack(root, "beta", "test", [("b9", "nine")])
    return root


def test_real_speech_manifests_resolve_audio_normalize_and_mark_source(real_pack, tmp_path):
    out = tmp_path / "out"
    assert main(["data", "real-speech", "--root", str(real_pack), "--out", str(out)]) in (0, None)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        f"{name}_cuts_{split}.jsonl.gz"
        for name in ("alpha", "beta", "real")
        for split in ("train", "test")
    )
    cuts = CutSet.from_file(out / "alpha_cuts_train.jsonl.gz")
    assert [c.supervisions[0].text for c in cuts] == ["hello world", "it's two cats"]
    for cut in CutSet.from_file(out / "real_cuts_test.jsonl.gz"):
        assert Path(cut.recording.sources[0].source).is_absolute()
        assert cut.load_audio().shape == (1, int(0.6 * SR))
        source = cut.supervisions[0].custom["source"]
        assert source == cut.id.split("-")[0] == cut_row(cut)["source"]
    with pytest.raises(Exception, match="unknown source"):
        prepare_real_speech(out, root=real_pack, sources=["gamma"])
    (real_pack / "beta/audio/b9.wav").unlink()
    with pytest.raises(Exception, match="b9.wav"):
        prepare_real_speech(out, root=real_pack)


def test_a_mixed_train_set_trains_and_evaluates_per_source(real_pack, tmp_path, capsys):
    out = tmp_path / "out"
    prepare_real_speech(out, root=real_pack)
    mix = [
        {"manifest": "alpha_cuts_train.jsonl.gz", "weight": 3.0},
        {"manifest": "beta_cuts_train.jsonl.gz", "weight": 1.0},
    ]
    overrides = {
        "data.corpus_dir": str(out),
        "data.train": mix,
        "data.test": "real_cuts_test.jsonl.gz",
        "data.max_duration": 3,
        "data.augment.specaugment": False,
        "model.encoder.preset": "tiny",
        "model.encoder.subsampling_factor": 4,
        "model.tokenizer": {"name": "char"},
        "train.out_dir": str(tmp_path / "run"),
        "train.max_steps": 3,
        "train.warmup_steps": 1,
        "train.val_every": 1000,
        "train.log_every": 1,
        "train.ema_decay": None,
        "train.device": "cpu",
    }
    recipe = load_recipe(RECIPE, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    trainer = Trainer(recipe, progress=False)
    assert isinstance(trainer.sampler, MixSampler)
    package = trainer.train()
    capsys.readouterr()
    manifest = out / "real_cuts_test.jsonl.gz"
    assert (
        main(["evaluate", str(package), str(manifest), "--results", str(tmp_path / "r.jsonl")]) == 0
    )
    printed = capsys.readouterr().out
    assert "  alpha: WER" in printed and "  beta: WER" in printed
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {"alpha", "beta"}
    assert trainer.task.evaluate(trainer.model, CutSet.from_file(manifest)).keys() >= {
        "wer",
        "wer_alpha",
        "wer_beta",
    }


@pytest.mark.skipif(shared_data_dir() is None, reason="the shared data pack is not here")
def test_the_shared_real_speech_loads(tmp_path):
    written = prepare_real_speech(tmp_path, sources=["dc_tts"])
    assert set(written) == {"dc_tts", "real"} and set(written["dc_tts"]) == {"train", "dev", "test"}
    cuts = CutSet.from_file(written["dc_tts"]["test"])
    assert len(cuts) == 7
    cut = next(iter(cuts))
    assert cut.load_audio().shape == (1, cut.recording.num_samples)
    assert cut.supervisions[0].text == cut.supervisions[0].text.lower()


@pytest.mark.skipif(shared_data_dir() is None, reason="the shared data pack is not here")
def test_recorded_speech_batches_with_recorded_noise_and_rooms(tmp_path):
    from suite.config import AugmentConfig
    from suite.features import Fbank
    from suite.tasks.asr.dataset import AsrDataset
    from suite.tokenizers import CharTokenizer

    cuts = source_cuts(shared_data_dir() / "speech-real", "dc_tts", "test").subset(first=3)
    config = AugmentConfig(real_noise_prob=1.0, reverb_prob=1.0, telephone_prob=0.5)
    dataset = AsrDataset(CharTokenizer(), Fbank(), config, training=True, seed=0)
    batch = dataset[(cuts, 5)]
    assert batch.inputs.shape[0] == 3 and bool(batch.inputs.isfinite().all())
    assert batch.texts == [c.supervisions[0].text for c in cuts]
    assert bool((dataset[(cuts, 5)].inputs == batch.inputs).all())
