"""``suite bench streaming``: chunk latency, streaming against offline speed, concurrent streams,
and the cache-aware Conformer against ``torchaudio.models.Emformer``, on CPU.

The model is the streaming recipe's (``recipes/asr/espeak_conformer_ctc_streaming.yaml``: small
preset, causal, 4x subsampling) with random weights: the work per chunk does not depend on the
weights, so speed is measured without a trained model (error rates need one: the shipped
``streaming-asr``, a smaller CPU-trained model, is scored with ``suite evaluate``). The input is
20 s of low-level noise at 16 kHz. Measured per trained chunked context:

- per-chunk compute latency (p50/p95) of one stream fed chunk by chunk through
  :class:`~suite.streaming.StreamingSession` (frontend, encoder, greedy CTC);
- streaming RTFx (audio seconds / compute seconds) against offline RTFx of the same model and
  context on the whole utterance (``recognize_audio``), and their ratio;
- concurrent real-time streams: the largest power of two of streams that one
  :class:`~suite.streaming.StreamBatcher` steps, one chunk each, faster than the chunk lasts;
- batched: ``BATCHED_STREAMS`` streams of the same audio, and as many as run in real time (the
  count above), stepped together through one :class:`~suite.streaming.StreamBatcher` chunk by
  chunk to the end (what a server does), their audio seconds over the wall time, against the
  same utterances decoded offline in one batch;
- against Emformer at matched width, depth, heads, feed-forward parameters (one feed-forward
  twice as wide as each of our macaron pair), segment (= our chunk) and left context, both fed
  the same feature chunks of one stream through the same subsampling convolution, streamed
  (cached across chunks, as a stream needs; run offline on each chunk alone, Emformer would pad
  each chunk's start with zeros and skip the cache): encoder frames per second, and the ratio
  ours / Emformer, the three models stepped in turns of ``TURN_CHUNKS`` chunks
  (``EMFORMER_PASSES`` passes over the audio after a warm-up one; also ``chunkwise``, one chunk
  per turn, see :func:`_frames_per_second`); and against an Emformer of matched size (the same,
  with feed-forwards widened until its parameter count equals ours).

Our model runs as built, or after :func:`suite.runtime.optimize_for_cpu` when the benchmark is
asked to (``measure(optimize_for_cpu=True)``, ``python -m suite.bench.streaming
--optimize-for-cpu``); ``config.optimize_for_cpu`` in the result says which.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

from suite import runtime
from suite.bench import print_header, report
from suite.config import load_recipe
from suite.kernels.attention import lookahead_frames
from suite.model import TaskModel, build_model
from suite.streaming import StreamBatcher, StreamingSession
from suite.tokenizers import CharTokenizer

RECIPE = Path(__file__).resolve().parents[2] / "recipes/asr/espeak_conformer_ctc_streaming.yaml"
SECONDS, SAMPLE_RATE = 20.0, 16000
MAX_STREAMS = 64
BATCHED_STREAMS = 16
EMFORMER_PASSES = 3
TURN_CHUNKS = 8  # chunks a model runs per turn in the Emformer comparison


def _model() -> TaskModel:
    torch.manual_seed(0)
    # Characters stand in for the recipe's BPE-256 (training one needs the corpus); the CTC
    # projection is a small part of the work either way.
    return build_model(load_recipe(RECIPE).model, CharTokenizer()).eval()


def _chunk_seconds(model: TaskModel, context: tuple[int, int]) -> float:
    factor = 2**model.encoder.subsampling.num_stages
    return (context[1] + 1) * factor * model.frontend.hop_ms / 1000


def _stream_latencies(model: TaskModel, audio: np.ndarray, context: tuple[int, int], chunk: int):
    session = StreamingSession(model, att_context=context)
    latencies = []
    for start in range(0, len(audio), chunk):
        begin = time.perf_counter()
        session.accept(audio[start : start + chunk], sample_rate=SAMPLE_RATE)
        latencies.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    session.finish()
    return latencies, sum(latencies) + time.perf_counter() - begin


def _offline_seconds(model: TaskModel, audio: np.ndarray, context: tuple[int, int]) -> float:
    model.encoder.att_context = context
    samples = torch.from_numpy(audio)[None]
    lengths = torch.tensor([len(audio)])
    model.recognize_audio(samples, lengths)  # warm-up
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        model.recognize_audio(samples, lengths)
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _concurrent_streams(model: TaskModel, audio: np.ndarray, context: tuple[int, int], chunk: int):
    """Largest power-of-two number of streams stepped faster than real time, and step times."""
    budget = chunk / SAMPLE_RATE
    best, steps = 0, {}
    count = 1
    while count <= MAX_STREAMS:
        batcher = StreamBatcher(model, att_context=context)
        ids = [batcher.open() for _ in range(count)]
        times = []
        for step in range(8):
            piece = audio[step * chunk : (step + 1) * chunk]
            for i in ids:
                batcher.accept(i, piece, sample_rate=SAMPLE_RATE)
            begin = time.perf_counter()
            batcher.step()
            times.append(time.perf_counter() - begin)
        steps[count] = statistics.median(times[2:])  # the first steps fill the caches
        if steps[count] > budget:
            break
        best, count = count, count * 2
    return best, steps


def _batched_rtfx(
    model: TaskModel, audio: np.ndarray, context: tuple[int, int], chunk: int, count: int
) -> tuple[float, float]:
    """RTFx of ``count`` streams of ``audio`` stepped together to their final text, and of the
    same ``count`` utterances decoded offline in one batch (medians of 3 after a warm-up)."""
    seconds = count * len(audio) / SAMPLE_RATE

    def streamed() -> float:
        batcher = StreamBatcher(model, att_context=context)
        ids = [batcher.open() for _ in range(count)]
        begin = time.perf_counter()
        for start in range(0, len(audio), chunk):
            for i in ids:
                batcher.accept(i, audio[start : start + chunk], sample_rate=SAMPLE_RATE)
            batcher.step()
        for i in ids:
            batcher.finish(i)
        batcher.step()
        return time.perf_counter() - begin

    model.encoder.att_context = context
    samples = torch.from_numpy(audio)[None].expand(count, -1).contiguous()
    lengths = torch.full((count,), len(audio))

    def offline() -> float:
        begin = time.perf_counter()
        model.recognize_audio(samples, lengths)
        return time.perf_counter() - begin

    streamed(), offline()  # warm-up
    streaming, batch = [], []
    for _ in range(3):  # interleaved: drift hits both alike
        streaming.append(streamed())
        batch.append(offline())
    return seconds / statistics.median(streaming), seconds / statistics.median(batch)


def _emformer(model: TaskModel, context: tuple[int, ...], ffn_dim: int) -> torch.nn.Module:
    """``torchaudio.models.Emformer`` with our encoder's width, depth and heads, segment = our
    chunk, left context = ours, right context = our look-ahead (none for ``(left, right)``), and
    feed-forwards ``ffn_dim`` wide."""
    encoder = model.encoder
    return torchaudio.models.Emformer(
        input_dim=encoder.output_dim,
        num_heads=encoder.layers[0].attn.num_heads,
        ffn_dim=ffn_dim,
        num_layers=len(encoder.layers),
        segment_length=context[1] + 1,
        left_context_length=context[0],
        right_context_length=lookahead_frames(context),
    ).eval()


def _parameters(module: torch.nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _emformer_ratio(model: TaskModel, context: tuple[int, int], seconds: float) -> dict:
    """Our encoder's streaming_forward against Emformer.infer on the same feature chunks, for
    two Emformers: matched dimensions (one feed-forward per layer, twice as wide as each of our
    macaron pair: ours then has the convolution modules on top) and matched size (feed-forwards
    widened until its parameters equal ours, within one unit of width)."""
    encoder = model.encoder
    factor = 2**encoder.subsampling.num_stages
    front = _parameters(encoder.subsampling)  # both run our subsampling
    ours_size = _parameters(encoder)
    dims_ffn = 2 * encoder.layers[0].ff1[1].out_features
    matched_dims = _emformer(model, context, dims_ffn)
    base = _parameters(matched_dims)
    per_unit = _parameters(_emformer(model, context, dims_ffn + 1)) - base
    size_ffn = dims_ffn + round((ours_size - front - base) / per_unit)
    emformers = {
        "emformer": matched_dims,
        "emformer_matched_size": _emformer(model, context, size_ffn),
    }
    frames_per_chunk = (context[1] + 1) * factor
    features = torch.randn(1, int(seconds * 100) // frames_per_chunk * frames_per_chunk, 80)
    chunks = features.split(frames_per_chunk, dim=1)
    lengths = torch.tensor([frames_per_chunk])
    segment, ahead = context[1] + 1, lookahead_frames(context)

    def ours_step(state: object, chunk: torch.Tensor) -> tuple[object, int]:
        if state is None:
            state = encoder.init_state(1, att_context=context)
        out, state = encoder.streaming_forward(chunk, lengths, state)
        return state, int(out.lengths.sum())

    def theirs_step(
        emformer: torch.nn.Module, state: object, chunk: torch.Tensor
    ) -> tuple[object, int]:
        # The same subsampling, streamed as ours is (its cache carries the last frames across
        # chunks, so each chunk's first frames see the stream's, not zero padding), then
        # Emformer's blocks.
        if state is None:  # frames seen, subsampling cache, held frames, Emformer's state
            state = (0, encoder.subsampling.init_cache(1), None, None)
        seen, cache, held, inner = state  # type: ignore[misc]
        x, n, cache = encoder.subsampling.streaming_forward(
            chunk, lengths, cache, torch.tensor([seen])
        )
        seen += chunk.shape[1]
        if not ahead:
            _, n, inner = emformer.infer(x, n, inner)
            return (seen, cache, None, inner), int(n.sum())
        # Emformer takes a segment with its right context after it: hold frames until then.
        x = x if held is None else torch.cat([held, x], dim=1)
        if x.shape[1] < segment + ahead:
            return (seen, cache, x, inner), 0
        window = x[:, : segment + ahead]
        _, n, inner = emformer.infer(window, torch.tensor([window.shape[1]]), inner)
        return (seen, cache, x[:, segment:], inner), int(n.sum())

    steps = {"ours": ours_step} | {
        name: (lambda state, chunk, e=e: theirs_step(e, state, chunk))
        for name, e in emformers.items()
    }
    parameters = {"ours": ours_size} | {
        name: _parameters(e) + front for name, e in emformers.items()
    }
    out: dict = {}
    for key, turn in (("", TURN_CHUNKS), ("chunkwise", 1)):
        speed = _frames_per_second(steps, chunks, turn)
        ratios = {
            "throughput_ratio": speed["ours"] / speed["emformer"],
            "throughput_ratio_matched_size": speed["ours"] / speed["emformer_matched_size"],
        }
        if key:
            out[key] = ratios
            continue
        out |= {
            name: {"frames_per_second": speed[name], "parameters": parameters[name]}
            for name in steps
        } | ratios
    out["emformer"]["ffn_dim"] = dims_ffn
    out["emformer_matched_size"]["ffn_dim"] = size_ffn
    return out


def _frames_per_second(steps: dict, chunks: tuple, turn: int) -> dict:
    """Encoder frames per second of each of ``steps`` (``step(state, chunk) -> (state,
    frames)``, ``None`` for a fresh stream's state) over ``chunks``, in
    turns of ``turn`` chunks per model, the models' order cycling through every permutation,
    over ``EMFORMER_PASSES`` passes after a warm-up one.

    Turns of several chunks leave each model the caches it would have serving alone, and still
    absorb a shared machine's drift, which timing each model over a whole pass does not. One
    chunk per turn (``chunkwise``, also reported) starts each step after the other models'
    weights went through the caches, which costs the model with more, smaller operations more.
    """
    names = list(steps)
    orders = list(itertools.permutations(names))
    elapsed = dict.fromkeys(names, 0.0)
    frames = dict.fromkeys(names, 0)
    for pass_ in range(EMFORMER_PASSES + 1):  # the first pass warms up
        states = dict.fromkeys(names)
        for i in range(0, len(chunks), turn):
            for name in orders[(i // turn) % len(orders)]:
                for chunk in chunks[i : i + turn]:
                    begin = time.perf_counter()
                    states[name], count = steps[name](states[name], chunk)
                    if pass_:
                        elapsed[name] += time.perf_counter() - begin
                        frames[name] += count
    return {name: frames[name] / elapsed[name] for name in names}


def measure(optimize_for_cpu: bool = False) -> dict:
    """Every figure of the benchmark, as one dict; ``optimize_for_cpu``: run our model after
    :func:`suite.runtime.optimize_for_cpu` (the Emformers as built either way)."""
    model = _model()
    if optimize_for_cpu:
        runtime.optimize_for_cpu(model)
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(int(SECONDS * SAMPLE_RATE))).astype(np.float32)
    contexts = [tuple(c) for c in model.encoder.att_contexts if c is not None]
    result: dict = {
        "config": {
            "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
            "audio_seconds": SECONDS,
            "threads": torch.get_num_threads(),
            "parameters": _parameters(model),
            "optimize_for_cpu": optimize_for_cpu,
        },
        "contexts": {},
    }
    with torch.inference_mode():
        for context in contexts:
            chunk = round(_chunk_seconds(model, context) * SAMPLE_RATE)
            _stream_latencies(model, audio[: 4 * chunk], context, chunk)  # warm-up
            latencies, streaming = _stream_latencies(model, audio, context, chunk)
            offline = _offline_seconds(model, audio, context)
            streams, step_seconds = _concurrent_streams(model, audio, context, chunk)
            batched = {}
            for count in sorted({BATCHED_STREAMS, streams} - {0}):
                rtfx, offline_rtfx = _batched_rtfx(model, audio, context, chunk, count)
                batched[str(count)] = {
                    "streaming_rtfx": rtfx,
                    "offline_rtfx": offline_rtfx,
                    "streaming_over_offline_rtfx": rtfx / offline_rtfx,
                }
            result["contexts"][str(list(context))] = {
                "chunk_ms": 1000 * chunk / SAMPLE_RATE,
                # what a chunk waits for beyond itself: its look-ahead frames
                "lookahead_ms": 1000
                * chunk
                / SAMPLE_RATE
                * lookahead_frames(context)
                / (context[1] + 1),
                "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
                "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
                "streaming_rtfx": SECONDS / streaming,
                "offline_rtfx": SECONDS / offline,
                "streaming_over_offline_rtfx": offline / streaming,
                "realtime_streams": streams,
                "step_seconds_by_streams": step_seconds,
                "batched": batched,  # by the number of streams
                "emformer": _emformer_ratio(model, context, SECONDS),
            }
    return result


def main(json_output: bool = False, optimize_for_cpu: bool = False) -> None:
    report(measure(optimize_for_cpu), json_output, _markdown)


def _chunk(r: dict) -> str:
    """A context's chunk in ms, with its look-ahead after a "+" when it has one."""
    ahead = r["lookahead_ms"]
    return f"{r['chunk_ms']:.0f}" + (f" + {ahead:.0f}" if ahead else "")


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header(
        "Streaming: latency, RTFx, concurrent streams, Emformer", "streaming", c["threads"]
    )
    print(
        f"- Model: `{c['recipe']}` with random weights ({c['parameters']:,} parameters), "
        f"{c['audio_seconds']:.0f} s of audio, one stream unless stated"
        + ("; weights re-laid by `optimize_for_cpu`" if c["optimize_for_cpu"] else "")
        + "\n"
    )
    print(
        "| context | chunk + look-ahead (ms) | latency p50 / p95 (ms) | streaming RTFx | "
        "offline RTFx | "
        "ratio | real-time streams | ours / Emformer (matched dims; matched size) | "
        "the same, chunk by chunk |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in result["contexts"].items():
        print(
            f"| {name} | {_chunk(r)} | {r['latency_p50_ms']:.1f} / "
            f"{r['latency_p95_ms']:.1f} | {r['streaming_rtfx']:.1f} | {r['offline_rtfx']:.1f} | "
            f"{r['streaming_over_offline_rtfx']:.2f} | {r['realtime_streams']} | "
            f"{r['emformer']['throughput_ratio']:.2f}; "
            f"{r['emformer']['throughput_ratio_matched_size']:.2f} | "
            f"{r['emformer']['chunkwise']['throughput_ratio']:.2f}; "
            f"{r['emformer']['chunkwise']['throughput_ratio_matched_size']:.2f} |"
        )
    print(
        f"\nBatched: {BATCHED_STREAMS} streams of the same audio, and as many as run in real "
        "time, stepped together to their final text, against the same utterances offline in "
        "one batch\n"
    )
    print("| context | chunk + look-ahead (ms) | streams | streaming RTFx | offline RTFx | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in result["contexts"].items():
        for count, b in r["batched"].items():
            print(
                f"| {name} | {_chunk(r)} | {count} | {b['streaming_rtfx']:.1f} | "
                f"{b['offline_rtfx']:.1f} | {b['streaming_over_offline_rtfx']:.2f} |"
            )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--optimize-for-cpu", action="store_true", help="re-lay our weights first (opt-in)"
    )
    args = parser.parse_args()
    runtime.keep_freed_memory()  # as `suite bench` does
    main(args.json, args.optimize_for_cpu)
