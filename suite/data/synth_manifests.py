"""The lhotse manifests and ``corpus.json`` of a synthetic speech corpus (``suite data
synth-speech``), rebuilt from the plan at the end of every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.data.effects import SAMPLE_RATE
from suite.data.engines import get_engine
from suite.io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from suite.data.synth import UtteranceSpec

SPLITS = ("train", "dev", "test")


def _native_voice(spec: UtteranceSpec) -> str:
    """The voice as its engine names it: ``en+f3`` for espeak-ng's ``en-gb+f3``, ``slt`` for
    ``flite-slt``."""
    if spec.engine == "espeak":
        from suite.data.synth import espeak_voice

        return espeak_voice(spec.voice)
    return spec.voice.removeprefix(f"{spec.engine}-")


def write_manifests(
    out: Path, prefix: str, kept: list[tuple[UtteranceSpec, int]], seed: int, settings: dict
) -> dict[str, Any]:
    """Write the lhotse manifests of every split and ``corpus.json``; return the summary.

    Args:
        out: the corpus folder.
        prefix: of the manifest names (``espeak`` or ``synth``).
        kept: the corpus's utterances in plan order, with their lengths in samples.
        seed: the plan's seed (it fixes the held-out voices).
        settings: what ``synth_settings.json`` holds, copied into ``corpus.json``.
    """
    # lhotse (and torch with it) is only needed here, so the workers never import it.
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    by_split: dict[str, list[tuple[UtteranceSpec, int]]] = {split: [] for split in SPLITS}
    for spec, samples in kept:
        by_split[spec.split].append((spec, samples))
    hours: dict[str, float] = {}
    counts: dict[str, int] = {}
    for split, items in by_split.items():
        recordings, supervisions = [], []
        for spec, samples in items:
            recording = Recording.from_file(spec.audio_path(out).resolve(), recording_id=spec.id)
            if recording.num_samples != samples or recording.sampling_rate != SAMPLE_RATE:
                raise RuntimeError(f"{spec.audio_path(out)} does not match its plan; delete it")
            recordings.append(recording)
            supervisions.append(
                SupervisionSegment(
                    id=spec.id,
                    recording_id=spec.id,
                    start=0.0,
                    duration=recording.duration,
                    channel=0,
                    text=spec.text,
                    language="en",
                    speaker=spec.voice,
                    custom={
                        "engine": spec.engine,
                        "voice": _native_voice(spec),
                        "rate": spec.rate,
                        "pitch": spec.pitch,
                        "pitch_range": spec.pitch_range,
                        "augmentation": spec.augmentation,
                        "voice_seen_in_train": spec.voice_seen_in_train,
                        "engine_seen_in_train": spec.engine_seen_in_train,
                    },
                )
            )
        recording_set = RecordingSet.from_recordings(recordings)
        supervision_set = SupervisionSet.from_segments(supervisions)
        cuts = CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set)
        manifests = [
            (f"recordings_{split}", recording_set),
            (f"supervisions_{split}", supervision_set),
            (f"cuts_{split}", cuts),
        ]
        if split == "test" and settings.get("held_out_engine"):
            unseen = cuts.filter(lambda c: not c.supervisions[0].custom["engine_seen_in_train"])
            manifests.append(("cuts_test_unseen_engine", unseen.to_eager()))
        for name, manifest in manifests:
            with atomic_path(out / f"{prefix}_{name}.jsonl.gz", suffix=".jsonl.gz") as tmp:
                manifest.to_file(tmp)
        hours[split] = round(sum(s for _, s in items) / SAMPLE_RATE / 3600, 4)
        counts[split] = len(items)

    from suite.data.synth import held_out_voices

    unseen = held_out_voices(seed)
    used = sorted({spec.voice for spec, _ in kept})
    engines = list(settings.get("engines", ["espeak"]))
    corpus = {
        "description": f"synthetic multi-voice English speech ({', '.join(engines)}), "
        "suite data synth-speech",
        "settings": settings,
        "sample_rate": SAMPLE_RATE,
        "hours": hours,
        "total_hours": round(sum(s for _, s in kept) / SAMPLE_RATE / 3600, 4),
        "utterances": counts,
        "engines": {
            name: {
                "utterances": sum(spec.engine == name for spec, _ in kept),
                "hours": round(sum(n for s, n in kept if s.engine == name) / SAMPLE_RATE / 3600, 4),
                "held_out": name == settings.get("held_out_engine"),
            }
            for name in engines
        },
        "voice_configs": {
            "all": sum(len(get_engine(name).voices) for name in engines),
            "held_out": unseen,
            "used": len(used),
            "used_seen": len(set(used) - set(unseen)),
            "used_unseen": len(set(used) & set(unseen)),
        },
        "manifests": {
            split: {
                k: f"{prefix}_{k}_{split}.jsonl.gz" for k in ("recordings", "supervisions", "cuts")
            }
            for split in SPLITS
        },
    }
    if settings.get("held_out_engine"):
        corpus["manifests"]["test"]["cuts_unseen_engine"] = "synth_cuts_test_unseen_engine.jsonl.gz"
    atomic_write_text(out / "corpus.json", json.dumps(corpus, indent=2) + "\n")
    return {
        "hours": hours,
        "total_hours": corpus["total_hours"],
        "utterances": len(kept),
        "utterances_per_split": counts,
        "voice_configs": len(used),
    }
