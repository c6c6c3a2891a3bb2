"""Streaming speech recognition: sessions, and a batcher that steps many streams at once.

The runtime of "Stateful Conformer with Cache-based Inference for Streaming ASR" (Noroozi et al.,
2024) for a whole task model: audio chunks of any size go through the causal frontend
(``Fbank.streaming_forward``), the cache-aware encoder (``streaming_forward``, which emits frames
chunk by chunk of its attention context) and the head's streaming greedy decoder (CTC or RNN-T,
``streaming_decode``). A CTC head with an LM decodes each stream once more when it ends
(``final_decode``: the LM's beam search over its frames): partial texts are greedy, the final
text is the head's default decoding.
Every stage is exact, so a stream's final text equals the offline transcription of the same
audio by the same model with the same attention context.

What differs from the paper's runtime: streams of different ages and chunk sizes share one batch
(every state is batch-first and concatenates per stream), and audio is accepted in any chunk
size; the encoder itself waits for whole attention chunks.

Dims legend: B - streams in a step, S - samples.

Usage::

    with StreamingSession(model) as session:        # or: asr.stream()
        for chunk in chunks:                         # float32 / int16 mono at the model's rate
            print(session.accept(chunk, sample_rate=16000))
        print(session.finish())

    batcher = StreamBatcher(model)                   # many concurrent streams, one batch
    a, b = batcher.open(), batcher.open()
    batcher.accept(a, chunk_a); batcher.accept(b, chunk_b)
    updates = batcher.step()                         # {stream id: StreamUpdate(text, final)}
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from suite.audio import MAX_CHANNELS, AudioError, check_sample_rate, prepare_samples
from suite.data.collate import pad_sequences
from suite.errors import UserError
from suite.interfaces import StreamingEncoder
from suite.model import TaskModel

State = TypeVar("State")


def _concat(values: list[Any], name: str) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat(values)
    if isinstance(first, list) and first and all(isinstance(v, Tensor) for v in first):
        return [torch.cat([v[i] for v in values]) for i in range(len(first))]  # per layer
    if isinstance(first, list):
        return [item for v in values for item in v]  # per stream
    if any(v != first for v in values):
        raise ValueError(
            f"streams with different '{name}' ({first!r} vs others) cannot step in one batch; "
            "batch only streams opened with the same options"
        )
    return first


def concat_states(states: Sequence[State]) -> State:
    """One state for all the streams of ``states`` (dataclasses of one type), in order.

    Field rules, which every streaming state in suite follows: a tensor is batch-first; a list
    of tensors holds one batch-first tensor per layer; any other list holds one item per
    stream; anything else (e.g. the attention context) is shared and must be equal.
    """
    if not states:
        raise ValueError("concat_states needs at least one state")
    fields = dataclasses.fields(states[0])
    return dataclasses.replace(
        states[0], **{f.name: _concat([getattr(s, f.name) for s in states], f.name) for f in fields}
    )


def split_state(state: State) -> list[State]:
    """The per-stream states (batch size 1) of ``state``; inverse of :func:`concat_states`."""
    fields = dataclasses.fields(state)
    values = {f.name: getattr(state, f.name) for f in fields}
    sizes = [v.shape[0] for v in values.values() if isinstance(v, Tensor)]
    if not sizes:
        raise ValueError(f"{type(state).__name__} has no batch-first tensor to split along")
    B = sizes[0]
    parts: dict[str, list[Any]] = {}
    for name, v in values.items():
        if isinstance(v, Tensor):
            parts[name] = list(v.split(1))
        elif isinstance(v, list) and v and all(isinstance(x, Tensor) for x in v):
            parts[name] = [list(layers) for layers in zip(*(x.split(1) for x in v), strict=True)]
        elif isinstance(v, list):
            if len(v) != B:
                raise ValueError(f"per-stream field '{name}' has {len(v)} items for {B} streams")
            parts[name] = [[item] for item in v]
        else:
            parts[name] = [v] * B
    return [dataclasses.replace(state, **{k: p[b] for k, p in parts.items()}) for b in range(B)]


def as_chunk(chunk: Any, sample_rate: int, model_rate: int) -> np.ndarray:
    """A streamed chunk as float32 mono samples ``(S,)``, with teaching errors.

    Args:
        chunk: ``(S,)`` or ``(S, C)`` (sounddevice's layout) float or integer PCM samples; a
            numpy array, a torch tensor or a list. A ``(C, S)`` chunk with at most
            ``MAX_CHANNELS`` rows and more columns than that is read as channels first (e.g.
            ``(2, S)`` stereo); either way several channels are averaged to mono, with an
            :class:`~suite.audio.AudioWarning`.
        sample_rate: rate of ``chunk`` in Hz.
        model_rate: the model's rate in Hz; streaming does not resample.

    Raises:
        AudioError: a rate that is not a number or not the model's, or samples that cannot be
            audio (NaN/Inf, strings, ragged lists, 3-D arrays, no side a channel count).
    """
    name = "the streamed chunk"
    sample_rate = check_sample_rate(sample_rate, "sample_rate", name)
    if sample_rate != model_rate:
        raise AudioError(
            f"streaming takes audio at the model's {model_rate / 1000:g} kHz, got {name} at "
            f"{sample_rate / 1000:g} kHz; resampling chunk by chunk would not match offline "
            f"results - record at {model_rate} Hz (e.g. sounddevice.InputStream(samplerate="
            f"{model_rate})) or resample the whole signal first with suite.audio.load_audio"
        )
    if isinstance(chunk, Tensor):
        chunk = chunk.detach().cpu()
        chunk = (chunk.float() if chunk.is_floating_point() else chunk).numpy()
    try:
        chunk = np.asarray(chunk)
    except (ValueError, TypeError) as e:  # e.g. a ragged list
        raise AudioError(
            f"expected {name} as an array of samples, got {type(chunk).__name__} that numpy "
            f"cannot read as one ({e}); pass a 1-D float32 or int16 array"
        ) from None
    if chunk.size == 0:
        return np.zeros(0, dtype=np.float32)
    if chunk.ndim > 2:
        raise AudioError(
            f"expected {name} shaped (S,) or (S, C), got shape {tuple(chunk.shape)}; "
            "pass one signal's samples, a chunk at a time"
        )
    if chunk.ndim == 2:
        rows, cols = chunk.shape
        if rows <= MAX_CHANNELS < cols:
            chunk = chunk.T  # (C, S) -> (S, C)
        elif cols > MAX_CHANNELS:
            raise AudioError(
                f"cannot tell channels from samples in {name} of shape {tuple(chunk.shape)}: "
                f"neither side is a channel count (1..{MAX_CHANNELS}); pass (S,) mono or "
                "(S, C) samples as sounddevice delivers them"
            )
    return prepare_samples(chunk, sample_rate, model_rate, name, channels_first=False)


@dataclass
class StreamUpdate:
    """What one step produced for a stream: its text so far, and whether it has ended."""

    text: str
    final: bool


class _Batch:
    """The batched (frontend, encoder, decoder) states of one pass, which its streams share
    until one of them needs its own: they are split then, once for all of them (splitting every
    pass was 4.8 ms of a 64-stream step of ~100 ms at 160 ms, for a server that steps the same
    streams again)."""

    def __init__(self, states: tuple[Any, Any, Any], size: int) -> None:
        self.states = states
        self.size = size
        self._parts: list[tuple[Any, Any, Any]] | None = None

    def part(self, index: int) -> tuple[Any, Any, Any]:
        """Stream ``index``'s states (batch size 1)."""
        if self._parts is None:
            self._parts = list(zip(*(split_state(x) for x in self.states), strict=True))
        return self._parts[index]


@dataclass
class _Stream:
    """One stream's buffered audio, text, and states: its own ``(frontend, encoder, decoder)``,
    or row ``index`` of ``batch`` (``states`` is None then)."""

    states: tuple[Any, Any, Any] | None
    batch: _Batch | None = None
    index: int = 0
    audio: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    text: str = ""
    finishing: bool = False
    done: bool = False

    def own_states(self) -> tuple[Any, Any, Any]:
        """This stream's states, split from its batch if they are still there."""
        if self.states is None:
            assert self.batch is not None
            self.states, self.batch = self.batch.part(self.index), None
        return self.states

    def pop(self, max_samples: int) -> np.ndarray:
        """Up to ``max_samples`` buffered samples, oldest first."""
        audio = np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)
        head, rest = audio[:max_samples], audio[max_samples:]
        self.audio, self.buffered = ([rest] if rest.size else []), int(rest.size)
        return head


class StreamBatcher:
    """Steps many concurrent streams of one model together, in one batch per step.

    Streams open and end at any time and receive audio in any chunk sizes; :meth:`step` runs
    every stream with new audio (or a pending :meth:`finish`) through the frontend, encoder and
    decoder as one batch. Not thread-safe: call it from one thread (or event loop).

    Args:
        model: an :class:`TaskModel` whose encoder is a causal :class:`StreamingEncoder`.
        att_context: the ``(left, right)`` context to stream with (default: the encoder's).
        head: which head decodes (default: the first); it needs ``streaming_decode``.
        max_step_seconds: audio per stream per batched pass; a step runs more passes when more
            is buffered, which bounds memory whatever the chunk size.
    """

    def __init__(
        self,
        model: TaskModel,
        att_context: Sequence[int] | None = None,
        head: str | None = None,
        max_step_seconds: float = 4.0,
    ) -> None:
        self.model = model.eval()
        if not isinstance(model.encoder, StreamingEncoder):
            raise UserError(
                f"{type(model.encoder).__name__} is not a streaming encoder; streaming needs a "
                "StreamingEncoder (e.g. conformer or squeezeformer with causal=True and an "
                "att_context)"
            )
        if not hasattr(model.frontend, "streaming_forward"):
            raise UserError(f"the {type(model.frontend).__name__} frontend cannot stream")
        self.head_name = head or next(iter(model.heads))
        self.head = model.heads[self.head_name]
        if not hasattr(self.head, "streaming_decode"):
            raise UserError(
                f"head '{self.head_name}' has no streaming decoder; stream with a CTC or RNN-T head"
            )
        self.att_context = None if att_context is None else tuple(att_context)
        self.device = next(model.parameters()).device
        self.max_samples = max(1, int(max_step_seconds * model.sample_rate))
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0
        self._fresh()  # fail now, not at the first step, if the model cannot stream

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def streams(self) -> list[int]:
        """Ids of the open streams (finished ones stay until :meth:`close`)."""
        return list(self._streams)

    def _fresh(self) -> _Stream:
        options = {} if self.att_context is None else {"att_context": self.att_context}
        try:
            encoder = self.model.encoder.init_state(1, self.device, **options)
        except ValueError as e:
            raise UserError(str(e)) from None
        frontend = self.model.frontend.init_state(1, self.device)
        return _Stream(states=(frontend, encoder, self.head.init_stream(1, self.device)))

    def _get(self, stream: int) -> _Stream:
        if stream not in self._streams:
            raise UserError(f"no open stream {stream}; open one with StreamBatcher.open()")
        return self._streams[stream]

    def open(self) -> int:
        """Start a stream; returns its id."""
        stream, self._next_id = self._next_id, self._next_id + 1
        self._streams[stream] = self._fresh()
        return stream

    def accept(self, stream: int, chunk: Any, sample_rate: int = 16000) -> None:
        """Buffer a chunk of audio (any size) for ``stream``; :meth:`step` processes it."""
        s = self._get(stream)
        if s.done or s.finishing:
            raise UserError(f"stream {stream} has finished; open a new stream for more audio")
        samples = as_chunk(chunk, sample_rate, self.sample_rate)
        if samples.size:
            s.audio.append(samples)
            s.buffered += int(samples.size)

    def finish(self, stream: int) -> None:
        """Mark the end of ``stream``'s audio; the next :meth:`step` flushes it."""
        self._get(stream).finishing = True

    def text(self, stream: int) -> str:
        """``stream``'s text so far (final once its :class:`StreamUpdate` said so)."""
        return self._get(stream).text

    def close(self, stream: int) -> str:
        """Forget ``stream`` (e.g. its client left); returns its last text."""
        return self._streams.pop(stream).text if stream in self._streams else ""

    @torch.inference_mode()
    def step(self) -> dict[int, StreamUpdate]:
        """Process every stream with buffered audio or a pending finish, batched together.

        Returns:
            ``{stream id: StreamUpdate}`` for the streams that were processed.
        """
        updates: dict[int, StreamUpdate] = {}
        while True:
            ready = [
                i for i, s in self._streams.items() if not s.done and (s.buffered or s.finishing)
            ]
            if not ready:
                return updates
            streams = [self._streams[i] for i in ready]
            pieces = [s.pop(self.max_samples) for s in streams]
            final = [s.finishing and s.buffered == 0 for s in streams]
            for i, s, text in zip(ready, streams, self._run(streams, pieces, final), strict=True):
                s.text = text
                s.done = s.done or (s.finishing and s.buffered == 0)
                updates[i] = StreamUpdate(text=text, final=s.done)

    def _run(
        self, streams: list[_Stream], pieces: list[np.ndarray], final: list[bool]
    ) -> list[str]:
        """One batched pass of ``pieces`` through frontend, encoder and decoder."""
        audio, lengths = pad_sequences(pieces, dtype=torch.float32)  # (B, S), (B,)
        audio, lengths = audio.to(self.device), lengths.to(self.device)
        batch = streams[0].batch
        if (
            batch is not None
            and batch.size == len(streams)
            and all(s.batch is batch and s.index == b for b, s in enumerate(streams))
        ):  # the same streams as the last pass, in order (a server's steady state): reuse it
            frontend, encoder, decoder = batch.states
        else:
            held = [s.own_states() for s in streams]
            frontend, encoder, decoder = (concat_states(list(x)) for x in zip(*held, strict=True))
        (features, feature_lengths), frontend = self.model.frontend.streaming_forward(
            audio, lengths, frontend
        )
        enc, encoder = self.model.encoder.streaming_forward(
            features, feature_lengths, encoder, final=torch.tensor(final, device=self.device)
        )
        hyps, decoder = self.head.streaming_decode(enc, decoder, tokenizer=self.model.tokenizer)
        texts = [h.text for h in hyps]
        batch = _Batch((frontend, encoder, decoder), len(streams))
        for b, s in enumerate(streams):
            s.states, s.batch, s.index = None, batch, b
        ended = [b for b, f in enumerate(final) if f]
        if ended and hasattr(self.head, "final_decode"):  # e.g. a CTC head's LM beam search
            state = concat_states([streams[b].own_states()[2] for b in ended])
            finals = self.head.final_decode(state, tokenizer=self.model.tokenizer)
            if finals is not None:  # None: the greedy text already is the final one
                for b, hyp in zip(ended, finals, strict=True):
                    texts[b] = hyp.text
        return texts


class StreamingSession:
    """One live stream: accept audio chunks of any size, read partial text, finish.

    A session is a :class:`StreamBatcher` with one stream, so it follows the same code path as
    a served stream. :meth:`finish` returns the offline transcription of all the audio by the
    same model with the same context.

    Args:
        model: an :class:`TaskModel` whose encoder is a causal :class:`StreamingEncoder`.
        att_context: the ``(left, right)`` context to stream with (default: the encoder's).
        head: which head decodes (default: the first).
    """

    def __init__(
        self, model: TaskModel, att_context: Sequence[int] | None = None, head: str | None = None
    ) -> None:
        self._batcher = StreamBatcher(model, att_context=att_context, head=head)
        self._stream = self._batcher.open()
        self._final: str | None = None

    @property
    def sample_rate(self) -> int:
        return self._batcher.sample_rate

    @property
    def text(self) -> str:
        """The text so far."""
        return self._final if self._final is not None else self._batcher.text(self._stream)

    def accept(self, chunk: Any, sample_rate: int = 16000) -> str:
        """Feed a chunk (``(S,)`` or ``(S, C)`` float/int16 samples); returns the partial text.

        The partial text only grows. Audio that does not yet complete an encoder chunk waits
        for the next call. A chunk that cannot be audio (see :func:`as_chunk`) raises an
        :class:`~suite.audio.AudioError` and is dropped; the session goes on.
        """
        if self._final is not None:
            raise UserError("this streaming session has finished; start a new one")
        self._batcher.accept(self._stream, chunk, sample_rate)
        self._batcher.step()
        return self._batcher.text(self._stream)

    def finish(self) -> str:
        """Flush the last partial chunk and return the final text (idempotent)."""
        if self._final is None:
            self._batcher.finish(self._stream)
            self._batcher.step()
            self._final = self._batcher.close(self._stream)
        return self._final

    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._final is None:
            self._final = self._batcher.close(self._stream)


@dataclass
class Partial:
    """One step of :func:`stream_audio`: the text so far and the compute time of the step."""

    text: str
    seconds: float  # audio time at the end of the chunk
    latency: float  # wall-clock seconds spent in ``accept`` / ``finish``
    final: bool = False


def stream_audio(
    session: StreamingSession,
    audio: np.ndarray,
    chunk_seconds: float = 0.16,
    realtime: bool = True,
) -> Iterator[Partial]:
    """Feed ``audio`` (mono, at the session's rate) chunk by chunk, paced like a live source.

    Yields one :class:`Partial` per chunk and a final one. With ``realtime``, chunk ``i`` is
    fed no earlier than ``i * chunk_seconds`` after the start (as a microphone would deliver
    it); ``latency`` is the compute time of each step.
    """
    rate = session.sample_rate
    size = max(1, int(round(chunk_seconds * rate)))
    start = time.perf_counter()
    for i, begin in enumerate(range(0, len(audio), size)):
        if realtime:
            time.sleep(max(0.0, start + (i + 1) * size / rate - time.perf_counter()))
        tick = time.perf_counter()
        text = session.accept(audio[begin : begin + size], sample_rate=rate)
        end = min(begin + size, len(audio)) / rate
        yield Partial(text=text, seconds=end, latency=time.perf_counter() - tick)
    tick = time.perf_counter()
    text = session.finish()
    yield Partial(text, len(audio) / rate, time.perf_counter() - tick, final=True)


def microphone_chunks(
    sample_rate: int = 16000, chunk_seconds: float = 0.16
) -> Iterator[np.ndarray]:
    """Mono float32 chunks from the default input device (PortAudio via ``sounddevice``).

    Raises:
        UserError: ``sounddevice`` is not installed, or there is no input device.
    """
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: sounddevice is there but PortAudio is not
        raise UserError(
            f"--mic needs the sounddevice package and PortAudio ({e}); install them with "
            "`pip install sounddevice` and `apt-get install libportaudio2`, or use --wav FILE"
        ) from None
    try:
        device = sd.query_devices(kind="input")
    except (sd.PortAudioError, ValueError):
        device = None
    if not device:
        raise UserError(
            "no audio input device found (no microphone, or no permission to use it); "
            "plug one in, check `python -m sounddevice`, or use --wav FILE"
        )
    blocksize = max(1, int(round(chunk_seconds * sample_rate)))
    with sd.InputStream(
        samplerate=sample_rate, channels=1, dtype="float32", blocksize=blocksize
    ) as stream:
        while True:
            chunk, _overflowed = stream.read(blocksize)  # (S, 1)
            yield chunk[:, 0].copy()
