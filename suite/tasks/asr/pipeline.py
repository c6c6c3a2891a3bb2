"""What ``suite.load`` gives for an ``asr`` package: :class:`Transcriber` (batch transcription,
long audio in chunks, word timestamps, and streaming sessions), plus :func:`attach_lm`, which
writes a copy of a package whose CTC head decodes with a language model."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch

from suite.audio import AudioError, AudioWarning
from suite.data.collate import pad_sequences
from suite.errors import UserError
from suite.model import TaskModel, build_model, load_package, save_package
from suite.tasks.asr import longform
from suite.tasks.asr.alignment import (
    Transcript,
    align_words,
    alignment_head,
    frame_seconds,
    join,
    word_pieces,
)

if TYPE_CHECKING:
    from suite.streaming import StreamingSession

AudioInput = str | Path | np.ndarray | torch.Tensor
LM_CARD_SECTION = "## Language model"  # the model-card section attach_lm writes
ERRORS = ("raise", "skip", "return")  # what transcribe does with inputs it cannot read

# Audio whose loudest 25 ms frame, once its mean (DC) is removed, stays under this RMS level is
# silence and transcribes as "". At -80 dBFS it lies 20 dB under speech the shipped models still
# recognize (-60 dBFS RMS) and above 16-bit dither; below it they output a stray word ("do",
# "her") for digital silence, a DC offset or 1-bit noise.
SILENCE_DBFS = -80.0


class InputsError(AudioError):
    """Inputs of one call that cannot be read, each with its :class:`~suite.audio.AudioError`.

    Args:
        failures: ``{index in the inputs: error}``, in input order.
        total: how many inputs the call had.
        what: what the inputs are called ("inputs", "cuts").
        action: what ``errors="skip"`` does with the others ("transcribe", "score").
    """

    def __init__(
        self,
        failures: dict[int, AudioError],
        total: int,
        what: str = "inputs",
        action: str = "transcribe",
    ) -> None:
        self.failures = failures
        n, rest = len(failures), total - len(failures)
        others = f'; pass errors="skip" to {action} the other {rest}' if rest else ""
        if total == 1:
            message = str(next(iter(failures.values())))
        elif n == 1:
            message = f"{next(iter(failures.values()))} (1 of {total} {what}{others})"
        else:
            listed = "".join(f"\n  {e}" for e in failures.values())
            message = f"{n} of {total} {what} cannot be read{others}:{listed}"
        super().__init__(message)


def is_silent(audio: np.ndarray, sample_rate: int) -> bool:
    """Whether ``audio (S,)`` is silence: no 25 ms frame, after removing the mean (a DC offset),
    is louder than :data:`SILENCE_DBFS` RMS."""
    if not len(audio):
        return True
    frame = max(1, sample_rate // 40)
    ac = audio.astype(np.float64) - audio.mean(dtype=np.float64)
    ac = np.pad(ac, (0, -len(ac) % frame)).reshape(-1, frame)  # (frames, 25 ms)
    loudest = float(np.sqrt(np.square(ac).mean(axis=1).max()))
    return loudest < 10 ** (SILENCE_DBFS / 20)


def transcribe_waveforms(
    model: TaskModel,
    audio: Sequence[np.ndarray],
    batch_size: int | None = 16,
    head: str | None = None,
    names: Sequence[str] | None = None,
    timestamps: bool = False,
    **decode_options: Any,
) -> list[str] | list[Transcript]:
    """Transcribe mono float32 waveforms at ``model.sample_rate``, longest first in batches.

    Silence (:func:`is_silent`) and audio too short for one feature frame transcribe as "",
    without the model: it has nothing to recognize there, and a model would guess a word.

    Args:
        model: an asr :class:`~suite.model.TaskModel`.
        audio: ``(S,)`` waveforms, each decoded whole.
        batch_size: the most utterances decoded together (None: all at once).
        head: which head decodes (default: the first).
        names: what to call each waveform in warnings (default: ``inputs[i]``).
        timestamps: return a :class:`~suite.tasks.asr.alignment.Transcript` (text and timed
            words) per waveform instead of its text.
        **decode_options: passed to the head's ``decode``.

    Returns:
        One text (or transcript) per waveform, in order.

    Raises:
        UserError: no head ``head``; or ``timestamps`` for a model without a CTC head.

    Warns:
        AudioWarning: audio too short for one feature frame.
    """
    rate = model.sample_rate
    name = head or next(iter(model.heads))
    if name not in model.heads:
        raise UserError(f"no head '{name}'; this model's heads: {', '.join(model.heads)}")
    aligner = alignment_head(model, name) if timestamps else None
    seconds = frame_seconds(model) if timestamps else 0.0
    num_frames = getattr(model.frontend, "num_frames", None)
    results: list[Any] = [Transcript("", (), len(x) / rate) if timestamps else "" for x in audio]
    todo = []
    for i, x in enumerate(audio):
        if num_frames is not None and num_frames(len(x)) == 0:
            what = names[i] if names is not None else f"inputs[{i}]"
            warnings.warn(
                f"{what}: {len(x)} samples ({len(x) / rate * 1000:.1f} ms at {rate} Hz) are "
                'shorter than one feature frame, so it transcribes as ""; pass longer audio',
                AudioWarning,
                stacklevel=3,
            )
        elif not is_silent(x, rate):
            todo.append(i)
    todo.sort(key=lambda i: len(audio[i]), reverse=True)
    device = next(model.parameters()).device
    step = batch_size or max(len(todo), 1)
    for start in range(0, len(todo), step):
        index = todo[start : start + step]
        batch, lengths = pad_sequences([audio[i] for i in index])  # (B, S), (B,)
        with torch.inference_mode():
            features, frames = model.frontend(batch.to(device), lengths.to(device))  # (B, T, F)
            enc = model.encode(features, frames)  # (B, T', D)
            hyps = model.heads[name].decode(enc, tokenizer=model.tokenizer, **decode_options)
            log_probs = aligner.log_probs(enc) if aligner is not None else None  # (B, T', V)
        for b, (i, hyp) in enumerate(zip(index, hyps, strict=True)):
            if log_probs is None:
                results[i] = hyp.text
                continue
            duration = len(audio[i]) / rate
            words = align_words(
                log_probs[b, : int(enc.lengths[b])],
                hyp.tokens,
                word_pieces(model.tokenizer, hyp.tokens),
                seconds,
                aligner.blank_id,
                duration,
            )
            results[i] = Transcript(hyp.text, tuple(words), duration)
    return results


def transcribe_long(
    model: TaskModel,
    source: np.ndarray | longform.LongFile,
    name: str,
    batch_size: int = 16,
    head: str | None = None,
    timestamps: bool = False,
    progress: bool | None = None,
    **decode_options: Any,
) -> str | Transcript:
    """Transcribe a long input chunk by chunk (:mod:`~suite.tasks.asr.longform`): split at
    pauses, up to ``batch_size`` chunks and :data:`~suite.tasks.asr.longform.BATCH_SECONDS` of
    padded audio decoded together, texts and word times joined. Memory holds a batch of chunks
    and the words so far, whatever the audio's length.

    Args:
        model: an asr :class:`~suite.model.TaskModel`.
        source: ``(S,)`` samples at ``model.sample_rate``, or a file to read in blocks.
        name: what messages call it.
        batch_size: the most chunks decoded together.
        head: which head decodes (default: the first).
        timestamps: return a :class:`~suite.tasks.asr.alignment.Transcript`, else the text.
        progress: a progress bar on stderr in audio seconds (``None``: on a terminal only).
        **decode_options: passed to the head's ``decode``.

    Raises:
        AudioError: the file cannot be decoded to its end, or holds NaN/Inf samples.
    """
    from tqdm import tqdm

    rate = model.sample_rate
    if isinstance(source, longform.LongFile):
        duration = source.duration
    else:
        duration = len(source) / rate
    parts: list[tuple[float, Transcript]] = []
    pending: list[tuple[float, np.ndarray]] = []
    disable = None if progress is None else not progress  # None: tqdm's check for a terminal
    with tqdm(total=round(duration, 1), unit="s", desc=name, disable=disable, leave=False) as bar:

        def flush() -> None:
            results = transcribe_waveforms(
                model,
                [chunk for _, chunk in pending],
                batch_size=None,
                head=head,
                names=[f"{name} at {offset:.1f} s" for offset, _ in pending],
                timestamps=timestamps,
                **decode_options,
            )
            for (offset, chunk), result in zip(pending, results, strict=True):
                text = result if isinstance(result, Transcript) else Transcript(result)
                parts.append((offset, text))
                bar.update(round(len(chunk) / rate, 1))
            pending.clear()
            longform.release_freed_memory()

        budget = longform.BATCH_SECONDS * rate  # padded samples per batch
        for offset, chunk in longform.chunks(source, rate, name):
            longest = max([len(c) for _, c in pending] + [len(chunk)])
            if pending and (len(pending) + 1) * longest > budget:
                flush()
            pending.append((offset, chunk))
            if len(pending) >= batch_size:
                flush()
        flush()
    joined = join(parts, duration)
    return joined if timestamps else joined.text


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

    @overload
    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = ...,
        batch_size: int = ...,
        head: str | None = ...,
        errors: Literal["raise"] = ...,
        timestamps: Literal[False] = ...,
        progress: bool | None = ...,
        **decode_options: Any,
    ) -> list[str]: ...

    @overload
    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = ...,
        batch_size: int = ...,
        head: str | None = ...,
        errors: Literal["raise"] = ...,
        *,
        timestamps: Literal[True],
        progress: bool | None = ...,
        **decode_options: Any,
    ) -> list[Transcript]: ...

    @overload
    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = ...,
        batch_size: int = ...,
        head: str | None = ...,
        *,
        errors: Literal["skip"],
        timestamps: bool = ...,
        progress: bool | None = ...,
        **decode_options: Any,
    ) -> list[str | Transcript | None]: ...

    @overload
    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = ...,
        batch_size: int = ...,
        head: str | None = ...,
        *,
        errors: Literal["return"],
        timestamps: bool = ...,
        progress: bool | None = ...,
        **decode_options: Any,
    ) -> list[str | Transcript | AudioError]: ...

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = None,
        batch_size: int = 16,
        head: str | None = None,
        errors: str = "raise",
        timestamps: bool = False,
        progress: bool | None = None,
        **decode_options: Any,
    ) -> list[Any]:
        """Transcribe files or arrays; returns one result per input, in input order: its text,
        or with ``timestamps=True`` a :class:`~suite.tasks.asr.alignment.Transcript` (``text``,
        ``words`` with ``word``, ``start``, ``end`` in seconds and ``confidence``).

        Silence (digital zeros, a DC offset, anything whose loudest 25 ms stays under
        :data:`SILENCE_DBFS`) and audio shorter than one feature frame (25 ms) give "".

        Audio longer than :data:`~suite.tasks.asr.longform.MAX_CHUNK` (20 s) is split at
        pauses and its chunks decoded in batches (:func:`transcribe_long`); a long file is
        read block by block, so an hour takes the memory of a minute. Shorter audio is decoded
        whole.

        Args:
            inputs: a path, an array, or a list of them (arrays need ``sample_rate``).
            sample_rate: sample rate of array inputs (1-384 kHz); other rates are resampled.
            batch_size: utterances (or a long input's chunks) decoded together (inputs are
                length-sorted first).
            head: which head decodes (default: the first).
            errors: what to do with inputs that cannot be read (missing, corrupt, NaN, ...):
                ``"raise"`` an :class:`InputsError` naming every one of them, before decoding
                any; ``"skip"`` them, each with an :class:`~suite.audio.AudioWarning`, and
                return ``None`` in their place; or ``"return"`` each one's
                :class:`~suite.audio.AudioError` in its place (as ``asyncio.gather`` does).
                The good inputs are transcribed either way. A long file is checked before
                decoding but read while it is decoded, so damage in its middle is found then
                (with ``"raise"``, after the inputs before it are decoded).
            timestamps: time every word by aligning the decoded tokens to a CTC head's frame
                posteriors (:mod:`~suite.tasks.asr.alignment`; the model needs a CTC head).
            progress: a progress bar on stderr while long inputs are transcribed (``None``:
                only when stderr is a terminal).
            **decode_options: passed to the head's ``decode`` (e.g. ``method="beam"``).

        Raises:
            InputsError: with ``errors="raise"``, one or more inputs cannot be read.
            UserError: ``timestamps=True`` for a model without a CTC head.
        """
        if errors not in ERRORS:
            raise UserError(f"errors must be one of {', '.join(ERRORS)}; got {errors!r}")
        single = _is_one_input(inputs)
        items = [inputs] if single else list(inputs)  # type: ignore[arg-type]
        names = [
            str(x)
            if isinstance(x, (str, Path))
            else "the input array"
            if single
            else f"inputs[{i}]"
            for i, x in enumerate(items)
        ]
        rate = self.sample_rate
        opened: dict[int, np.ndarray | longform.LongFile] = {}
        failures: dict[int, AudioError] = {}
        for i, (x, name) in enumerate(zip(items, names, strict=True)):
            try:
                opened[i] = longform.open_input(x, sample_rate, rate, name, longform.MAX_CHUNK)
            except AudioError as e:
                failures[i] = e
        if failures and errors == "raise":
            raise InputsError(failures, len(items))
        if errors == "skip":
            for e in failures.values():
                warnings.warn(f"skipped: {e}", AudioWarning, stacklevel=2)
        out: list[Any] = [None if errors == "skip" else failures.get(i) for i in range(len(items))]
        short = [
            i
            for i in sorted(opened)
            if isinstance(opened[i], np.ndarray) and len(opened[i]) <= longform.MAX_CHUNK * rate
        ]
        results = transcribe_waveforms(
            self.model,
            [opened[i] for i in short],  # type: ignore[misc]
            batch_size=batch_size,
            head=head,
            names=[names[i] for i in short],
            timestamps=timestamps,
            **decode_options,
        )
        for i, result in zip(short, results, strict=True):
            out[i] = result
        for i in sorted(set(opened) - set(short)):
            try:
                out[i] = transcribe_long(
                    self.model,
                    opened.pop(i),  # its samples go once it is done
                    names[i],
                    batch_size=batch_size,
                    head=head,
                    timestamps=timestamps,
                    progress=progress,
                    **decode_options,
                )
            except AudioError as e:
                if errors == "raise":
                    raise InputsError({i: e}, len(items)) from None
                if errors == "skip":
                    warnings.warn(f"skipped: {e}", AudioWarning, stacklevel=2)
                out[i] = None if errors == "skip" else e
        return out

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


def _is_one_input(inputs: Any) -> bool:
    """Whether ``transcribe`` was given one input rather than a list of them (a list of numbers
    is one waveform, which ``load_audio`` then asks to be an array)."""
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor, bytes)):
        return True
    if not isinstance(inputs, Iterable):
        return True
    return isinstance(inputs, Sequence) and bool(inputs) and isinstance(inputs[0], (int, float))


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
    weights_dtype: torch.dtype | None = None,
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
        weights_dtype: the dtype the new package stores its parameters in (see
            :func:`~suite.model.save_package`); ``None`` keeps float32.
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
    return save_package(fused.eval(), out_dir, card=card, weights_dtype=weights_dtype)
