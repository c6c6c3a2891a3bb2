"""``suite bench decoding``: batched label-looping RNN-T greedy search against the per-utterance
loop, and AED beam search with a KV cache against recomputing the prefix, on CPU.

Both decode the same encoder output with the same RNN-T head (``rnnt``, ``small`` preset, LSTM
predictor) and must give identical hypotheses: :func:`~suite.heads.rnnt.greedy_search` advances
every utterance together in tensors, :func:`~suite.heads.rnnt.greedy_search_reference` loops over
utterances and frames in Python. The weights and encoder frames are random: the decoding loop does
the same work per frame and per label whatever the weights, as long as the number of labels is
realistic, so the joiner's output layer is scaled up (sharp posteriors, as trained) and the blank
logit gets a bias, found by bisection on separate random frames, that makes greedy search emit
about one label every ``1 / LABELS_PER_FRAME`` frames (a trained subword model on 40 ms frames does
about that). Measured: seconds per decode of the whole batch (median of
interleaved repeats after warm-up, in inference mode), and the speed-up loop / batched.

AED: the ``aed`` head (``small`` preset) beam-searches ``AED_BATCH`` utterances of the same kind of
random frames, ``AED_BEAM`` beams each, all in one batch, with and without its KV cache
(:class:`~suite.heads.aed.DecoderScorer`): cached, a step runs one position per row against cached
self-attention keys and values and cross-attention keys and values computed once; uncached, it
runs the teacher-forcing forward over the whole prefix and the encoder frames, as training does.
Both must give identical hypotheses. The output layer is scaled up (sharp posteriors, as trained,
so float noise between the two paths cannot swap near-tied beams) and eos is suppressed, so every
hypothesis runs to its length limit of ``AED_TOKENS_PER_FRAME`` tokens per encoder frame (a
trained BPE-256 model on 40 ms frames emits about that) and the work is the same in every run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import suite
from suite.bench import print_header, report
from suite.heads.aed import AedHead
from suite.heads.rnnt import RnntHead, greedy_search, greedy_search_reference
from suite.interfaces import EncoderOutput, Hypothesis

BATCH, FRAMES, VOCAB, WIDTH = 32, 250, 256, 256  # 32 utterances of 10 s at 40 ms per frame
LABELS_PER_FRAME = 0.4
MAX_SYMBOLS = 5
REPEATS = 5
AED_BATCH, AED_BEAM = 8, 4
AED_TOKENS_PER_FRAME = 0.3


def _timed(
    runs: dict[str, Callable[[], list[Hypothesis]]],
) -> tuple[dict[str, list[Hypothesis]], dict[str, float]]:
    """Each run's hypotheses (its first call, which is also the warm-up) and its median seconds
    over ``REPEATS`` passes, the runs interleaved within each pass."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    hyps = {name: fn() for name, fn in runs.items()}
    for _ in range(REPEATS):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return hyps, {name: statistics.median(t) for name, t in times.items()}


def _print_table(method: str, unit: str, rows: tuple[tuple[str, str], ...], figures: dict) -> None:
    """A Markdown table of ``figures[name]``'s seconds and ``{unit}_per_second`` for each
    ``(name, label)`` of ``rows``."""
    print(f"| {method} | batch decode (s) | {unit}/s |")
    print("|---|---:|---:|")
    for name, label in rows:
        r = figures[name]
        print(f"| {label} | {r['seconds']:.3f} | {r[f'{unit}_per_second']:,.0f} |")


def _frames(batch: int, frames: int, seed: int) -> EncoderOutput:
    """Random encoder output ``(B, T, WIDTH)``; lengths in ``[0.9 T, T]``, the first is T."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(0.9 * frames), frames + 1, (batch,), generator=g)
    lengths[0] = frames
    return EncoderOutput(torch.randn(batch, frames, WIDTH, generator=g), lengths)


def _labels_per_frame(head: RnntHead, enc: EncoderOutput) -> float:
    hyps = greedy_search(head, enc, MAX_SYMBOLS)
    return sum(len(h.tokens) for h in hyps) / int(enc.lengths.sum())


def _sharpened_head(name: str, out: Callable[[Any], torch.nn.Linear]) -> Any:
    """The ``small`` preset of head ``name`` with random weights and its output layer (``out``
    of the head) scaled up.

    Random init gives nearly flat posteriors, on which the decoder's choices hinge on noise
    (the RNN-T label rate jumps from none to every frame over a tiny range of blank bias, and
    near-tied AED beams swap on float noise); a trained head's posteriors are sharp, and
    sharpening the random ones makes the work per frame and per label like a trained model's.
    """
    torch.manual_seed(0)
    head = suite.create_head(name, preset="small", input_dim=WIDTH, vocab_size=VOCAB).eval()
    out(head).weight.mul_(8.0)
    return head


def _calibrated_head() -> RnntHead:
    """The random head, sharpened, with the blank bias that gives about ``LABELS_PER_FRAME``."""
    head = _sharpened_head("rnnt", lambda h: h.joiner.out)
    calibration = _frames(8, FRAMES, seed=1)
    base = float(head.joiner.out.bias[head.blank_id])
    low, high = 0.0, 16.0  # a higher blank bias emits fewer labels
    for _ in range(8):
        mid = (low + high) / 2
        head.joiner.out.bias[head.blank_id] = base + mid
        if _labels_per_frame(head, calibration) > LABELS_PER_FRAME:
            low = mid
        else:
            high = mid
    return head


def _aed_head() -> AedHead:
    """The random AED head, sharpened, that never chooses eos before its length limit."""
    head = _sharpened_head("aed", lambda h: h.decoder.out)
    head.decoder.out.bias[head.eos_id] = -30.0
    return head


def measure_aed() -> dict:
    """Seconds per batch beam search of the AED head with and without its KV cache."""
    with torch.inference_mode():
        head = _aed_head()
        enc = _frames(AED_BATCH, FRAMES, seed=3)
        options = {
            "method": "beam",
            "beam_size": AED_BEAM,
            "max_length_ratio": AED_TOKENS_PER_FRAME,
        }
        runs = {
            "cached": lambda: head.decode(enc, use_kv_cache=True, **options),
            "recomputed": lambda: head.decode(enc, use_kv_cache=False, **options),
        }
        hyps, seconds = _timed(runs)
    tokens = sum(len(h.tokens) for h in hyps["cached"])
    decoder = head.decoder
    result: dict = {
        "config": {
            "batch": AED_BATCH,
            "beam_size": AED_BEAM,
            "frames": FRAMES,
            "valid_frames": int(enc.lengths.sum()),
            "vocab_size": VOCAB,
            "encoder_dim": WIDTH,
            "d_model": decoder.d_model,
            "num_layers": len(decoder.layers),
            "tokens_per_frame": AED_TOKENS_PER_FRAME,
            "repeats": REPEATS,
            "threads": torch.get_num_threads(),
        },
        "tokens": tokens,
        "identical_hypotheses": [h.tokens for h in hyps["cached"]]
        == [h.tokens for h in hyps["recomputed"]],
        "max_score_difference": max(
            abs(a.score - b.score) for a, b in zip(hyps["cached"], hyps["recomputed"], strict=True)
        ),
    }
    for name, median in seconds.items():
        result[name] = {"seconds": median, "tokens_per_second": tokens / median}
    result["kv_cache_speedup"] = result["recomputed"]["seconds"] / result["cached"]["seconds"]
    return result


def measure() -> dict:
    """Seconds per batch decode of both greedy searches, then :func:`measure_aed`; returns the
    figures as a dict."""
    with torch.inference_mode():
        head = _calibrated_head()
        enc = _frames(BATCH, FRAMES, seed=2)
        runs = {
            "batched": lambda: greedy_search(head, enc, MAX_SYMBOLS),
            "loop": lambda: greedy_search_reference(head, enc, MAX_SYMBOLS),
        }
        hyps, seconds = _timed(runs)
    frames = int(enc.lengths.sum())
    labels = sum(len(h.tokens) for h in hyps["batched"])
    result: dict = {
        "config": {
            "batch": BATCH,
            "frames": FRAMES,
            "valid_frames": frames,
            "vocab_size": VOCAB,
            "encoder_dim": WIDTH,
            "pred_dim": head.joiner.pred_proj.in_features,
            "joint_dim": head.joiner.out.in_features,
            "predictor": "lstm",
            "max_symbols_per_frame": MAX_SYMBOLS,
            "repeats": REPEATS,
            "threads": torch.get_num_threads(),
        },
        "labels_per_frame": labels / frames,
        "identical_hypotheses": [h.tokens for h in hyps["batched"]]
        == [h.tokens for h in hyps["loop"]],
    }
    for name, median in seconds.items():
        result[name] = {"seconds": median, "frames_per_second": frames / median}
    result["rnnt_greedy_speedup"] = result["loop"]["seconds"] / result["batched"]["seconds"]
    result["aed"] = measure_aed()
    result["aed_kv_cache_speedup"] = result["aed"]["kv_cache_speedup"]
    return result


def main(json_output: bool = False) -> None:
    report(measure(), json_output, _markdown)


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header(
        "Decoding: batched label-looping RNN-T greedy vs a per-utterance loop; AED beam search "
        "with vs without a KV cache",
        "decoding",
        c["threads"],
    )
    print(
        f"- Input: ({c['batch']}, {c['frames']}, {c['encoder_dim']}) random encoder frames, "
        f"{c['valid_frames']:,} valid; random `rnnt` head (small preset: {c['predictor']} "
        f"predictor {c['pred_dim']}, joint {c['joint_dim']}, vocab {c['vocab_size']}), blank "
        f"bias set for {result['labels_per_frame']:.2f} labels per frame; at most "
        f"{c['max_symbols_per_frame']} per frame; inference mode, median of {c['repeats']} "
        f"interleaved passes; identical hypotheses: {result['identical_hypotheses']}\n"
    )
    rows = (("batched", "batched label looping"), ("loop", "per-utterance loop"))
    _print_table("greedy search", "frames", rows, result)
    print(f"\nSpeed-up (loop / batched): **{result['rnnt_greedy_speedup']:.1f}x**")
    a = result["aed"]
    c = a["config"]
    print(
        f"\n- AED: ({c['batch']}, {c['frames']}, {c['encoder_dim']}) random encoder frames, "
        f"{c['valid_frames']:,} valid; random `aed` head (small preset: {c['num_layers']} layers, "
        f"width {c['d_model']}, vocab {c['vocab_size']}), beam {c['beam_size']} over the whole "
        f"batch ({c['batch'] * c['beam_size']} rows), eos suppressed so every hypothesis runs to "
        f"{c['tokens_per_frame']} tokens per frame ({a['tokens']:,} tokens); inference mode, "
        f"median of {c['repeats']} interleaved passes; identical hypotheses: "
        f"{a['identical_hypotheses']} (scores within {a['max_score_difference']:.1e})\n"
    )
    rows = (("cached", "KV cache"), ("recomputed", "no cache (whole prefix)"))
    _print_table("AED beam search", "tokens", rows, a)
    print(f"\nSpeed-up (no cache / KV cache): **{result['aed_kv_cache_speedup']:.1f}x**")
