"""``suite bench decoding``: batched label-looping RNN-T greedy search against the per-utterance
loop, on CPU.

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
"""

from __future__ import annotations

import json
import statistics
import time

import torch

import suite
from suite.bench import print_header
from suite.heads.rnnt import RnntHead, greedy_search, greedy_search_reference
from suite.interfaces import EncoderOutput

BATCH, FRAMES, VOCAB, WIDTH = 32, 250, 256, 256  # 32 utterances of 10 s at 40 ms per frame
LABELS_PER_FRAME = 0.4
MAX_SYMBOLS = 5
REPEATS = 5


def _frames(batch: int, frames: int, seed: int) -> EncoderOutput:
    """Random encoder output ``(B, T, WIDTH)``; lengths in ``[0.9 T, T]``, the first is T."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(0.9 * frames), frames + 1, (batch,), generator=g)
    lengths[0] = frames
    return EncoderOutput(torch.randn(batch, frames, WIDTH, generator=g), lengths)


def _labels_per_frame(head: RnntHead, enc: EncoderOutput) -> float:
    hyps = greedy_search(head, enc, MAX_SYMBOLS)
    return sum(len(h.tokens) for h in hyps) / int(enc.lengths.sum())


def _calibrated_head() -> RnntHead:
    """The random head, sharpened, with the blank bias that gives about ``LABELS_PER_FRAME``."""
    torch.manual_seed(0)
    head = suite.create_head("rnnt", preset="small", input_dim=WIDTH, vocab_size=VOCAB).eval()
    # Random init gives nearly flat posteriors (logit std ~0.3), where the label rate jumps
    # from none to every frame within a tenth of a nat of blank bias; a trained joiner's are
    # sharp. Logits of std ~2 make the rate a smooth function of the bias.
    head.joiner.out.weight.mul_(8.0)
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


def measure() -> dict:
    """Seconds per batch decode of both greedy searches; returns the figures as a dict."""
    with torch.inference_mode():
        head = _calibrated_head()
        enc = _frames(BATCH, FRAMES, seed=2)
        runs = {
            "batched": lambda: greedy_search(head, enc, MAX_SYMBOLS),
            "loop": lambda: greedy_search_reference(head, enc, MAX_SYMBOLS),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        hyps = {name: fn() for name, fn in runs.items()}  # also the warm-up
        for _ in range(REPEATS):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
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
    for name in runs:
        median = statistics.median(times[name])
        result[name] = {"seconds": median, "frames_per_second": frames / median}
    result["rnnt_greedy_speedup"] = result["loop"]["seconds"] / result["batched"]["seconds"]
    return result


def main(json_output: bool = False) -> None:
    result = measure()
    if json_output:
        print(json.dumps(result))
        return
    c = result["config"]
    print_header(
        "Decoding: batched label-looping RNN-T greedy vs a per-utterance loop",
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
    print("| greedy search | batch decode (s) | frames/s |")
    print("|---|---:|---:|")
    for name, label in (("batched", "batched label looping"), ("loop", "per-utterance loop")):
        r = result[name]
        print(f"| {label} | {r['seconds']:.3f} | {r['frames_per_second']:,.0f} |")
    print(f"\nSpeed-up (loop / batched): **{result['rnnt_greedy_speedup']:.1f}x**")
