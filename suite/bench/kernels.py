"""``suite bench kernels``: the Triton attention kernels against PyTorch's, on a CUDA GPU.

Packed attention (:mod:`suite.kernels.varlen`) on ragged batches, forward and forward +
backward, bf16, against the same attention on the padded batch through:

- ``sdpa_flash``: ``F.scaled_dot_product_attention`` with the flash backend and no mask (it
  cannot take one): the padded batch's cost with padding attended, a lower bound for any padded
  kernel; full context only;
- ``sdpa_efficient``: the memory-efficient backend with the boolean ``(B, 1, T, T)`` mask;
- ``flex``: compiled FlexAttention with the same rule as a block mask (built once, outside the
  timing);
- ``reference``: the math backend with the mask.

Batches: ``speech``, ``SPEECH_BATCH`` utterances drawn from the sampler benchmark's
LibriSpeech-like durations at the streaming recipe's 25 encoder frames/s (4x subsampling),
``HEADS`` x ``HEAD_DIM`` heads, full context and the chunked contexts the recipes train with;
``vit``, ``VIT_BATCH`` images of 112, 224 or 384 px at patch 16 (50, 197, 577 tokens), ViT-B
heads. Reported: median milliseconds, TFLOP/s of the unmasked score and value products (the
backward counted as 2.5 forwards), the fraction of the GPU's dense bf16 peak where known, and
each baseline's time over the packed kernel's.

Streaming step: a stack of the streaming recipe's attention layers (``STREAM_LAYERS`` layers of
width 176, 4 heads; context ``STREAM_CONTEXT``), one chunk per stream per step, caches full, at
1, 16, 64 and 256 streams: the layers' own step (``SelfAttention.streaming_forward``: joined
caches, an SDPA call, the next caches cut out), the Triton ring step
(``SelfAttention.ring_step``) eager, and the same replayed as one CUDA graph per step
(:class:`suite.kernels.graphs.GraphedStep`). The convolutions and feed-forwards of a Conformer
block are not in the stack.

Without CUDA the benchmark stops with one line: the kernels' CPU check is the interpreter
parity tests (``pytest tests/test_kernels_varlen.py tests/test_kernels_stream.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import torch

from suite.bench import print_header, report
from suite.errors import UserError

SPEECH_BATCH, FRAME_RATE = 64, 25.0
HEADS, HEAD_DIM = 4, 64
VIT_BATCH, VIT_TOKENS, VIT_HEADS = 64, (50, 197, 577), 12
SPEECH_CONTEXTS = {"full": None, "(128, 3)": (128, 3), "(128, 15)": (128, 15)}
STREAM_LAYERS, STREAM_WIDTH, STREAM_HEADS, STREAM_CONTEXT = 8, 176, 4, (128, 7)
STREAM_COUNTS = (1, 16, 64, 256)
WARMUP, ITERS = 3, 20
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def require_cuda() -> None:
    """Raise a one-line :class:`UserError` when there is no CUDA GPU or no Triton."""
    if not torch.cuda.is_available():
        raise UserError(
            "suite bench kernels needs a CUDA GPU (it times the Triton kernels against SDPA "
            "and FlexAttention) and found none; on the CPU the kernels are checked by "
            "`pytest tests/test_kernels_varlen.py tests/test_kernels_stream.py` (Triton's "
            "interpreter)"
        )
    from suite.kernels.varlen import triton_available

    if not triton_available():
        raise UserError("suite bench kernels needs triton; install it with `pip install triton`")


def _time_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of ``fn`` over ``ITERS`` calls after ``WARMUP``, CUDA events."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(ITERS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _peak() -> float | None:
    name = torch.cuda.get_device_name()
    return next((tf for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def speech_lengths(seed: int = 0) -> torch.Tensor:
    from suite.bench.sampler import librispeech_like_durations

    durations = librispeech_like_durations(SPEECH_BATCH, np.random.default_rng(seed))
    return torch.tensor(np.maximum(1, np.round(durations * FRAME_RATE)).astype(np.int64))


def vit_lengths(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.choice(VIT_TOKENS, size=VIT_BATCH))


def _attention_case(lengths: torch.Tensor, heads: int, context, backward: bool) -> dict:
    """Milliseconds and TFLOP/s of each method on one batch."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from suite.kernels.attention import attention_mask
    from suite.kernels.backends import _compiled_flex, flex_block_mask
    from suite.kernels.varlen import cu_seqlens, flops, pack, packed_attention

    device, dtype = torch.device("cuda"), torch.bfloat16
    B, T = lengths.shape[0], int(lengths.max())
    lengths = lengths.to(device)
    padded = [
        torch.randn(B, heads, T, HEAD_DIM, device=device, dtype=dtype, requires_grad=backward)
        for _ in range(3)
    ]
    packed = [
        pack(x.detach().transpose(1, 2), lengths).requires_grad_(backward) for x in padded
    ]  # (N, H, Dh)
    cu = cu_seqlens(lengths)
    if context is None:
        valid = torch.arange(T, device=device)[None, :] < lengths[:, None]
        mask = valid[:, None, None, :] | (lengths == 0)[:, None, None, None]
    else:
        mask = attention_mask(lengths, T, context)
    block_mask = flex_block_mask(lengths, T, context)
    flex = _compiled_flex()

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        if not backward:
            return lambda: fn()

        def step() -> None:
            out = fn()
            out.backward(torch.ones_like(out))

        return step

    def sdpa(backend, with_mask: bool) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(
                    *padded, attn_mask=mask if with_mask else None
                )

        return fn

    methods: dict[str, Callable[[], torch.Tensor]] = {
        "triton_packed": lambda: packed_attention(*packed, cu, T, context),
        "sdpa_efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION, True),
        "flex": lambda: flex(*padded, block_mask=block_mask),
        "reference": sdpa(SDPBackend.MATH, True),
    }
    if context is None:
        methods["sdpa_flash"] = sdpa(SDPBackend.FLASH_ATTENTION, False)
    useful = flops(lengths.cpu(), context, heads=heads, head_dim=HEAD_DIM) * (
        3.5 if backward else 1.0
    )
    peak = _peak()
    result = {}
    for name, fn in methods.items():
        try:
            ms = _time_ms(run(fn))
        except (RuntimeError, torch.OutOfMemoryError) as e:  # e.g. a backend that refuses
            result[name] = {"error": str(e).splitlines()[0][:120]}
            continue
        tflops = useful / ms / 1e9
        result[name] = {
            "ms": ms,
            "tflops": tflops,
            "peak_fraction": None if peak is None else tflops / peak,
        }
    ours = result["triton_packed"].get("ms")
    for r in result.values():
        if "ms" in r and ours:
            r["vs_triton"] = r["ms"] / ours  # > 1: the packed kernel is faster
    return {"frames": int(lengths.sum()), "padded_frames": B * T, "methods": result}


def _stream_case(streams: int) -> dict:
    """Milliseconds per step of the layer stack: the layers' step, ring step, graphed."""
    from suite.kernels.graphs import GraphedStep
    from suite.kernels.stream import ring_capacity
    from suite.nn.attention import SelfAttention
    from suite.nn.context import cache_frames
    from suite.nn.step import stream_step

    device = torch.device("cuda")
    torch.manual_seed(0)
    layers = [
        SelfAttention(STREAM_WIDTH, STREAM_HEADS).to(device).eval() for _ in range(STREAM_LAYERS)
    ]
    chunk = STREAM_CONTEXT[1] + 1
    M = cache_frames(STREAM_CONTEXT)
    Dh = STREAM_WIDTH // STREAM_HEADS
    x = torch.randn(streams, chunk, STREAM_WIDTH, device=device)
    start = M * 2  # caches full: the steady state of a long-running stream
    positions = torch.full((streams,), start, device=device)
    new = torch.full((streams,), chunk, device=device)
    caches = [torch.randn(streams, STREAM_HEADS, M, Dh, device=device) for _ in range(2)]
    C = ring_capacity(M, chunk)
    rings = [
        [torch.randn(streams, STREAM_HEADS, C, Dh, device=device) for _ in range(2)] for _ in layers
    ]

    def layers_step() -> torch.Tensor:
        pos = positions[:, None] + torch.arange(chunk, device=device)
        valid = torch.ones(streams, chunk, dtype=torch.bool, device=device)
        step = stream_step(valid, pos, STREAM_CONTEXT, M, layers[0].inv_freq)
        h = x
        for layer in layers:
            out, _, _ = layer.streaming_forward(h, step, *caches)
            h = h + out
        return h

    def ring(h: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor]:
        for layer, (k, v) in zip(layers, rings, strict=True):
            h = h + layer.ring_step(h, p, n, k, v, M, STREAM_CONTEXT)
        return (h,)

    graphed = GraphedStep(ring, buckets=STREAM_COUNTS)
    with torch.inference_mode():
        eager_ms = _time_ms(layers_step)
        ring_ms = _time_ms(lambda: ring(x, positions, new))
        graph_ms = _time_ms(lambda: graphed(x, positions, new))
    return {
        "eager_ms": eager_ms,
        "ring_ms": ring_ms,
        "graphed_ms": graph_ms,
        "graphed_speedup": eager_ms / graph_ms,
        "chunk_ms": 1000.0 * chunk / FRAME_RATE,
    }


def measure() -> dict:
    """Every table of the benchmark (see the module docstring)."""
    require_cuda()
    torch.backends.cuda.matmul.allow_tf32 = True
    attention_results = {}
    for backward in (False, True):
        mode = "fwd+bwd" if backward else "fwd"
        for name, context in SPEECH_CONTEXTS.items():
            attention_results[f"speech {name} {mode}"] = _attention_case(
                speech_lengths(), HEADS, context, backward
            )
        attention_results[f"vit full {mode}"] = _attention_case(
            vit_lengths(), VIT_HEADS, None, backward
        )
    streaming = {str(n): _stream_case(n) for n in STREAM_COUNTS}
    return {
        "config": {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "dtype": "bfloat16",
            "head_dim": HEAD_DIM,
            "speech_batch": SPEECH_BATCH,
            "vit_batch": VIT_BATCH,
            "stream_layers": STREAM_LAYERS,
            "stream_context": list(STREAM_CONTEXT),
            "peak_bf16_tflops": _peak(),
        },
        "attention": attention_results,
        "streaming": streaming,
    }


def main(json_output: bool = False) -> None:
    require_cuda()
    report(measure(), json_output, _markdown)


def _markdown(result: dict) -> None:
    c = result["config"]
    print_header("Triton attention kernels", "kernels", torch.get_num_threads())
    print(f"- GPU: {c['device']}, {c['dtype']}, head width {c['head_dim']}\n")
    names = ["triton_packed", "sdpa_flash", "sdpa_efficient", "flex", "reference"]
    print("| batch, context, pass | real / padded frames | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for case, r in result["attention"].items():
        cells = []
        for name in names:
            m = r["methods"].get(name)
            if m is None:
                cells.append("-")
            elif "error" in m:
                cells.append("fails")
            else:
                frac = "" if m["peak_fraction"] is None else f", {100 * m['peak_fraction']:.0f}%"
                ratio = "" if name == "triton_packed" else f", {m['vs_triton']:.2f}x"
                cells.append(f"{m['ms']:.2f} ms ({m['tflops']:.0f} TF/s{frac}{ratio})")
        print(f"| {case} | {r['frames']} / {r['padded_frames']} | " + " | ".join(cells) + " |")
    print(
        "\nMilliseconds (TFLOP/s, % of dense bf16 peak, time over the packed kernel's).\n\n"
        "| streams | layers' step (ms) | ring step (ms) | ring step, CUDA graph (ms) | "
        "speedup | chunk (ms) |\n|---:|---:|---:|---:|---:|---:|"
    )
    for n, s in result["streaming"].items():
        print(
            f"| {n} | {s['eager_ms']:.2f} | {s['ring_ms']:.2f} | {s['graphed_ms']:.2f} | "
            f"{s['graphed_speedup']:.1f}x | {s['chunk_ms']:.0f} |"
        )
