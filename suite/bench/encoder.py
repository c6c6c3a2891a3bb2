"""``suite bench encoder``: our Conformer blocks against ``torchaudio.models.Conformer``, on CPU.

Both stacks get the same already-subsampled input ``(B, T', D)`` with the same valid lengths, at
matched width, depth, heads, feed-forward size and depthwise kernel (the ``small`` preset), in
inference mode. Measured: frames per second through the block stack (median of several timed
passes after warm-up, the two models interleaved so that machine noise hits both alike), and the
ratio ours / torchaudio's; then the same batch with no padding (every item full length), since
ours skips padding frames in its feed-forwards and torchaudio's computes them. Parameters are
counted too: ours also has rotary attention (no parameters) and LayerNorm instead of BatchNorm
in the convolution module.

Ours runs as built, or after :func:`suite.runtime.optimize_for_cpu` when asked to
(``measure(optimize_for_cpu=True)``, ``python -m suite.bench.encoder --optimize-for-cpu``);
``config.optimize_for_cpu`` in the result says which.
"""

from __future__ import annotations

import statistics
import time

import torch
import torchaudio

from suite import runtime
from suite.bench import print_header, report
from suite.encoders.conformer import Conformer

BATCH, FRAMES = 16, 250  # 16 utterances of 20 s after 8x subsampling (80 ms frames)
REPEATS, WARMUP = 7, 2


def _ours(d_model: int, num_layers: int, num_heads: int, kernel: int) -> torch.nn.Module:
    encoder = Conformer(
        d_model=d_model, num_layers=num_layers, num_heads=num_heads, conv_kernel=kernel
    )
    return encoder.eval()


def measure(optimize_for_cpu: bool = False) -> dict:
    """Throughput of both block stacks; returns the figures as a dict. ``optimize_for_cpu``:
    ours after :func:`suite.runtime.optimize_for_cpu` (torchaudio's as built either way)."""
    torch.manual_seed(0)
    d_model, num_layers, num_heads, kernel, ff_mult = 176, 8, 4, 9, 4
    ours = _ours(d_model, num_layers, num_heads, kernel)
    if optimize_for_cpu:
        runtime.optimize_for_cpu(ours)
    theirs = torchaudio.models.Conformer(
        input_dim=d_model,
        num_heads=num_heads,
        ffn_dim=ff_mult * d_model,
        num_layers=num_layers,
        depthwise_conv_kernel_size=kernel,
        dropout=0.0,
    ).eval()
    x = torch.randn(BATCH, FRAMES, d_model)
    lengths = torch.randint(FRAMES // 2, FRAMES + 1, (BATCH,))
    lengths[0] = FRAMES
    full = torch.full_like(lengths, FRAMES)  # the same batch without padding
    runs = {
        "ours": lambda: ours.run_blocks(x, lengths, None),
        "torchaudio": lambda: theirs(x, lengths),
        "ours_no_padding": lambda: ours.run_blocks(x, full, None),
        "torchaudio_no_padding": lambda: theirs(x, full),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(WARMUP):
            for fn in runs.values():
                fn()
        for _ in range(REPEATS):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    frames = int(lengths.sum())
    result: dict = {
        "config": {
            "d_model": d_model,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "ffn_dim": ff_mult * d_model,
            "kernel": kernel,
            "batch": BATCH,
            "frames": FRAMES,
            "threads": torch.get_num_threads(),
            "optimize_for_cpu": optimize_for_cpu,
        }
    }
    for name, model in (("ours", ours.layers), ("torchaudio", theirs)):
        median = statistics.median(times[name])
        result[name] = {
            "seconds": median,
            "frames_per_second": frames / median,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    result["throughput_ratio"] = (
        result["ours"]["frames_per_second"] / result["torchaudio"]["frames_per_second"]
    )
    # Without padding the feed-forwards have no frames to skip: the arithmetic alone.
    result["seconds_no_padding"] = {
        name: statistics.median(times[f"{name}_no_padding"]) for name in ("ours", "torchaudio")
    }
    no_padding = result["seconds_no_padding"]
    result["throughput_ratio_no_padding"] = no_padding["torchaudio"] / no_padding["ours"]
    return result


def main(json_output: bool = False, optimize_for_cpu: bool = False) -> None:
    report(measure(optimize_for_cpu), json_output, _markdown)


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header(
        "Encoder: Conformer blocks vs torchaudio.models.Conformer", "encoder", c["threads"]
    )
    print(
        f"- Input: ({c['batch']}, {c['frames']}, {c['d_model']}) subsampled frames, random "
        f"lengths; {c['num_layers']} layers, {c['num_heads']} heads, FF {c['ffn_dim']}, "
        f"kernel {c['kernel']}; inference mode, median of {REPEATS} interleaved passes"
        + ("; ours re-laid by `optimize_for_cpu`" if c["optimize_for_cpu"] else "")
        + "\n"
    )
    print("| encoder | parameters | pass (s) | frames/s |")
    print("|---|---:|---:|---:|")
    for name in ("ours", "torchaudio"):
        r = result[name]
        print(
            f"| {name} | {r['parameters']:,} | {r['seconds']:.3f} | {r['frames_per_second']:,.0f} |"
        )
    print(f"\nThroughput ratio (ours / torchaudio): **{result['throughput_ratio']:.2f}**")
    no_padding = result["seconds_no_padding"]
    print(
        f"\nThe same batch with every item {c['frames']} frames long (no padding; ours skips "
        f"padding frames in its feed-forwards): {no_padding['ours']:.3f} s ours, "
        f"{no_padding['torchaudio']:.3f} s torchaudio, ratio "
        f"**{result['throughput_ratio_no_padding']:.2f}**"
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
