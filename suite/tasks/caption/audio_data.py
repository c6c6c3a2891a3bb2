"""Sound scenes as captioning data: the manifest ``suite data synth-sounds`` writes
(:mod:`suite.data.sounds`) read as immutable :class:`SoundItem` rows, and batches of log-mel
features with tokenized captions.

Dims legend: B - batch, S - samples, T - feature frames, F - mel bins, U - caption tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.audio import load_audio
from suite.data.manifest_files import JsonlManifest
from suite.errors import UserError
from suite.interfaces import Batch, Frontend, Tokenizer
from suite.tasks.caption.dataset import caption_targets


def restore_commas(text: str) -> str:
    """The commas of the sound-caption grammar put back into a normalized caption (the
    tokenizers keep ``a-z ' space`` only): after a leading "while <sound>" and before a
    "then" not led by "and", so that a model's caption reads like its references and
    :func:`~suite.data.sounds.caption_facts` parses its background."""
    from suite.data.sounds import CLASSES

    if "," in text:
        return text
    if text.startswith("while "):
        for phrase in sorted((c.phrase for c in CLASSES.values()), key=len, reverse=True):
            if text[6:].startswith(phrase + " "):
                text = f"while {phrase}, {text[7 + len(phrase) :]}"
                break
    return re.sub(r"(?<!\band) then ", ", then ", text)


@dataclass(frozen=True)
class SoundItem:
    """One sound scene of a manifest.

    Attributes:
        id: unique within the manifest.
        source: the scene's audio file.
        duration: seconds.
        caption: the first caption (a training target).
        captions: every phrasing (references for BLEU/CIDEr/ROUGE).
        groups: the foreground groups in order, ``{"class", "count"}`` each.
        background: the background texture's class, or ``None``.
        events: every occurrence (``class``, ``onset``, ``offset``, ...).
        novel: the held-out class pairs the scene holds (test scenes).
    """

    id: str
    source: str
    duration: float = 0.0
    caption: str = ""
    captions: tuple[str, ...] = ()
    groups: tuple[dict[str, Any], ...] = ()
    background: str | None = None
    events: tuple[dict[str, Any], ...] = ()
    novel: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        """What :func:`suite.data.sounds.score_caption` reads of a scene."""
        return {"groups": list(self.groups), "background": self.background}


def is_sound_manifest(path: str | Path) -> bool:
    """Whether the first line of the ``.jsonl`` at ``path`` is a sound scene (it has
    ``groups`` and ``events``) rather than an image scene."""
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return isinstance(row, dict) and "events" in row and "groups" in row
    except ValueError:  # not JSON, not text (UnicodeDecodeError is one)
        return False
    return False


class SoundManifest(JsonlManifest[SoundItem]):
    """An immutable list of :class:`SoundItem` read from a ``.jsonl`` manifest; audio is read
    on :meth:`load`."""

    item_type = SoundItem
    error = UserError
    noun, plural, command = "sound scene", "scenes", "synth-sounds"

    @classmethod
    def _item(cls, raw: Any) -> SoundItem:
        names = set(SoundItem.__dataclass_fields__)
        raw = {k: v for k, v in raw.items() if k in names}
        raw["captions"] = tuple(raw.get("captions") or [raw.get("caption", "")])
        raw["groups"] = tuple(raw.get("groups", ()))
        raw["events"] = tuple(raw.get("events", ()))
        raw["novel"] = tuple(raw.get("novel", ()))
        return SoundItem(**raw)

    def load(self, index: int, sample_rate: int = 16000) -> np.ndarray:
        """The scene's audio, ``(S,)`` float32 mono at ``sample_rate``."""
        return load_audio(self._items[index].source, target_sample_rate=sample_rate)


def features(waves: Sequence[np.ndarray], frontend: Frontend) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms at the frontend's rate -> features ``(B, T, F)`` and frame lengths, on
    the frontend's device."""
    device = next(iter(frontend.buffers()), torch.empty(0)).device
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long, device=device)
    audio = torch.zeros(len(waves), int(lengths.max()), device=device)  # (B, S)
    for row, w in enumerate(waves):
        samples = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        audio[row, : len(w)] = samples.to(device)
    with torch.no_grad():
        return frontend(audio, lengths)


def audio_caption_batch(
    scenes: SoundManifest,
    indices: Sequence[int],
    frontend: Frontend,
    tokenizer: Tokenizer,
    seed: int | None = None,
) -> Batch:
    """The scenes at ``indices``: log-mel ``inputs (B, T, F)`` with frame ``lengths``,
    ``targets (B, U)`` padded with 0 and ``target_lengths``, ``texts`` and ``ids``. Each
    target is one of the scene's phrasings drawn from ``seed`` (the first when ``None``),
    normalized as the tokenizer reads text (no commas: :func:`restore_commas` puts them back
    into the model's captions)."""
    texts, targets, target_lengths = caption_targets(
        scenes, indices, tokenizer, seed, normalize=True
    )
    x, lengths = features([scenes.load(i, frontend.sample_rate) for i in indices], frontend)
    return Batch(
        inputs=x,
        lengths=lengths,
        targets=targets,
        target_lengths=target_lengths,
        texts=texts,
        ids=[scenes[i].id for i in indices],
        prompts=["caption"] * len(texts),
    )
