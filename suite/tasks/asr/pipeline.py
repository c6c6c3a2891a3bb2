"""What ``suite.load`` gives for an ``asr`` package: :class:`Transcriber` (batch transcription
and streaming sessions), plus :func:`attach_lm`, which writes a copy of a package whose CTC head
decodes with a language model."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from suite.audio import load_audio
from suite.data.collate import pad_sequences
from suite.errors import UserError
from suite.model import TaskModel, build_model, load_package, save_package

if TYPE_CHECKING:
    from suite.streaming import StreamingSession

AudioInput = str | Path | np.ndarray | torch.Tensor
LM_CARD_SECTION = "## Language model"  # the model-card section attach_lm writes


class Transcriber:
    """Speech recognition with a model package.

    Args:
        model: the loaded task model.
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: TaskModel, name: str = "") -> None:
        self.model = model.eval()
        self.name = name

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = None,
        batch_size: int = 16,
        head: str | None = None,
        **decode_options: Any,
    ) -> list[str]:
        """Transcribe files or arrays; returns one string per input, in input order.

        Args:
            inputs: a path, an array, or a list of them (arrays need ``sample_rate``).
            sample_rate: sample rate of array inputs; other rates are resampled.
            batch_size: utterances decoded together (inputs are length-sorted first).
            head: which head decodes (default: the first).
            **decode_options: passed to the head's ``decode`` (e.g. ``method="beam"``).
        """
        if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
            inputs = [inputs]
        audio = [
            load_audio(x, sample_rate=sample_rate, target_sample_rate=self.sample_rate)
            for x in inputs
        ]
        order = sorted(range(len(audio)), key=lambda i: len(audio[i]), reverse=True)
        texts: list[str] = [""] * len(audio)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch, lengths = pad_sequences([audio[i] for i in index])  # (B, S), (B,)
            hyps = self.model.recognize_audio(
                batch.to(device), lengths.to(device), head=head, **decode_options
            )
            for i, hyp in zip(index, hyps, strict=True):
                texts[i] = hyp.text
        return texts

    def stream(
        self, att_context: Sequence[int] | None = None, head: str | None = None
    ) -> StreamingSession:
        """A live :class:`~suite.streaming.StreamingSession`: ``accept(chunk)`` returns the
        partial text, ``finish()`` the final one (equal to offline decoding with the same
        context). Needs a model trained for streaming (causal, with chunked contexts).

        Args:
            att_context: ``(left, right)`` or ``(left, right, ahead)`` in encoder frames
                (default: :func:`default_stream_context`); chunks are ``right + 1`` frames,
                each also seeing the ``ahead`` frames after it.
            head: which head decodes (default: the first).
        """
        from suite.streaming import StreamingSession

        if att_context is None:
            att_context = default_stream_context(self.model)
        return StreamingSession(self.model, att_context=att_context, head=head)


def default_stream_context(model: TaskModel) -> tuple[int, ...]:
    """The smallest-latency chunked context ``model`` was trained with, e.g. ``(64, 1)``: the
    fewest frames a chunk waits for (``right + 1 + ahead``); among equals, the one that looks
    furthest ahead (``(128, 1, 2)`` before ``(128, 3)``: more accurate, more compute)."""
    encoder = model.encoder
    trained = [c for c in (getattr(encoder, "att_contexts", None) or []) if c is not None]
    current = getattr(encoder, "att_context", None)
    if current is not None and current[0] >= 0:
        trained.append(current)
    if not getattr(encoder, "causal", False) or not trained:
        raise UserError(
            "this model was not trained for streaming (it needs causal=True and chunked "
            "att_contexts in its recipe, e.g. recipes/asr/espeak_conformer_ctc_streaming.yaml)"
        )
    from suite.kernels.attention import lookahead_frames  # model families import lazily

    return min(trained, key=lambda c: (c[1] + lookahead_frames(c), -lookahead_frames(c), -c[0]))


def attach_lm(
    model_dir: str | Path,
    lm_dir: str | Path,
    out_dir: str | Path,
    head: str | None = None,
    **options: Any,
) -> Path:
    """Write a copy of a model package whose CTC head decodes with an LM (shallow fusion).

    The LM package's weights go inside the head (frozen), so the new package loads alone; its
    tokenizer must be the model's. An LM the head already had is replaced. The model card is
    copied with a section on the LM (replacing an earlier one).

    Args:
        model_dir: the model package.
        lm_dir: an LM package written by ``suite train-lm`` over the model's tokenizer.
        out_dir: the new package folder (may be ``model_dir`` itself).
        head: the CTC head to give the LM (default: the first CTC head).
        **options: the head's decoding defaults, e.g. ``lm_weight=1.0, length_bonus=2.5``.
    """
    model = load_package(model_dir, task="asr")
    ctc = [name for name, spec in model.config.heads.items() if spec["name"] == "ctc"]
    name = head or (ctc[0] if ctc else next(iter(model.heads)))
    if name not in ctc:
        raise UserError(
            f"head '{name}' of {model_dir} is a '{model.config.heads[name]['name']}' head; only "
            f"CTC heads decode with an LM (shallow fusion); its CTC heads: {ctc or 'none'}"
        )
    config = dataclasses.replace(model.config, heads=dict(model.config.heads))
    config.heads[name] = {**config.heads[name], **options, "lm": str(lm_dir)}
    fused = build_model(config, model.tokenizer)  # the head's LM: the LM package's weights
    prefix = f"heads.{name}.lm."
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing, unexpected = fused.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(prefix) for k in missing), (missing, unexpected)
    card_path = Path(model_dir) / "README.md"
    card = card_path.read_text() if card_path.is_file() else f"# {Path(out_dir).name}\n"
    earlier = rf"\n{LM_CARD_SECTION}\n.*?(?=\n## |\Z)"  # an earlier LM's section, to the next
    card = re.sub(earlier, "", card, flags=re.S).rstrip("\n") + "\n"
    settings = ", ".join(f"{k}={v}" for k, v in fused.heads[name].options.items())
    card += (
        f"\n{LM_CARD_SECTION}\n\nThe `{name}` head decodes with the LM package `{lm_dir}` "
        f"(frozen, inside this package) by shallow fusion in the prefix beam search ({settings}); "
        f'written by `suite models attach-lm`. `method="greedy"` decodes without it.\n'
    )
    return save_package(fused.eval(), out_dir, card=card)
