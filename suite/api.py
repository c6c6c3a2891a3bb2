"""The Python inference API: ``suite.load(name_or_path)`` and ``suite.list_models()``.

Shipped packages live in ``suite/pretrained/<name>/`` (installed with the package); any folder
written by ``suite train`` (``RUN/model``) loads the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from suite.audio import load_audio
from suite.errors import UserError
from suite.model import AsrModel, load_package

if TYPE_CHECKING:
    from suite.streaming import StreamingSession

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

AudioInput = str | Path | np.ndarray | torch.Tensor


def list_models() -> dict[str, str]:
    """Shipped model packages by name, with their task (e.g. ``{"default-asr": "asr"}``)."""
    out = {}
    for config in sorted(PRETRAINED_DIR.glob("*/config.yaml")):
        out[config.parent.name] = yaml.safe_load(config.read_text()).get("task", "asr")
    return out


def resolve(name_or_path: str | Path) -> Path:
    """The package folder of a shipped name or a path, with an error listing the names."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if (PRETRAINED_DIR / str(name_or_path)).is_dir():
        return PRETRAINED_DIR / str(name_or_path)
    shipped = ", ".join(list_models()) or "(none)"
    raise UserError(
        f"no model '{name_or_path}': not a folder and not a shipped model; shipped: {shipped}"
    )


class Transcriber:
    """Speech recognition with a model package.

    Args:
        model: the loaded task model.
        name: where it was loaded from (shown in messages).
    """

    def __init__(self, model: AsrModel, name: str = "") -> None:
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
            lengths = torch.tensor([len(audio[i]) for i in index])
            batch = torch.zeros(len(index), int(lengths.max()))  # (B, S)
            for row, i in enumerate(index):
                batch[row, : len(audio[i])] = torch.from_numpy(audio[i])
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


def default_stream_context(model: AsrModel) -> tuple[int, ...]:
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


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> Transcriber:
    """Load a shipped model by name (see :func:`list_models`) or a package folder."""
    path = resolve(name_or_path)
    return Transcriber(load_package(path, device=device), name=str(name_or_path))
