"""The packed variable-length attention kernel against its PyTorch reference and the encoders'
attention functions: forward and gradients, fuzzed lengths and contexts.

The Triton cases run on CUDA when there is a GPU, and on the CPU under Triton's interpreter:
``TRITON_INTERPRET=1`` has to be set before the kernels are defined, so without a GPU
:func:`test_interpreter_parity` runs this file again in a child process with it set, and the
rest of the test session never sees the interpreter.
"""

from __future__ import annotations

import random

import pytest
import torch

from suite.kernels.attention import attention, attention_mask, cached_attention
from suite.kernels.testing import CUDA, DEVICE, INTERPRET, interpreter_parity
from suite.kernels.varlen import (
    allowed_keys,
    cu_seqlens,
    lookahead_tables,
    pack,
    packed_attention,
    packed_attention_reference,
    padded_attention,
    rotate_rows,
    triton_available,
    unpack,
)
from suite.nn.rotary import rotary_frequencies, rotate

runs_triton = pytest.mark.skipif(
    not triton_available() or not (INTERPRET or CUDA),
    reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 (test_interpreter_parity)",
)
DTYPES = [torch.float32] if DEVICE == "cpu" else [torch.float32, torch.bfloat16]
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.mark.skipif(INTERPRET or CUDA or not triton_available(), reason="runs the cases directly")
def test_interpreter_parity():
    """Every Triton case of this file under ``TRITON_INTERPRET=1``, in a child process."""
    interpreter_parity(__file__)


def random_case(seed: int) -> tuple[list[int], tuple[int, int] | None, int]:
    """Lengths (some empty, some shorter than a chunk), a context and a stride."""
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, rng.randint(2, 12), rng.randint(13, 40)]) for _ in range(3)]
    lengths[rng.randrange(3)] = rng.randint(17, 40)  # at least one past a 16-row block
    right = rng.randint(0, 5)
    context = rng.choice([None, (-1, right), (rng.randint(0, 12), right)])
    stride = rng.choice([1, 1, 2]) if context is not None else 1
    return lengths, context, stride


def grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    return list(torch.autograd.grad(out, inputs, g))


def assert_close(
    got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str, scale: float = 1.0
) -> None:
    """Max abs diff within the dtype's tolerance; bf16's is relative to the largest value."""
    err = (got.float() - want.float()).abs().max().item() if got.numel() else 0.0
    tol = TOL[dtype] * scale
    if dtype != torch.float32 and want.numel():
        tol *= max(1.0, want.float().abs().max().item())
    assert err <= tol, f"{what}: max abs diff {err:.3g} > {tol:.3g}"


@runs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_packed_matches_reference(seed, dtype):
    lengths, context, stride = random_case(seed)
    torch.manual_seed(seed)
    N, H, D = sum(lengths), 2, random.Random(seed).choice([8, 12, 16])
    q, k, v = (torch.randn(N, H, D, device=DEVICE).to(dtype).requires_grad_() for _ in range(3))
    cu = cu_seqlens(torch.tensor(lengths))
    inv_freq = rotary_frequencies(D) if seed % 2 else None  # rotary inside the kernel
    options = {"context": context, "stride": stride, "inv_freq": inv_freq}
    got = packed_attention(q, k, v, cu, **options)
    want = packed_attention_reference(q, k, v, cu, **options)
    what = f"lengths {lengths} context {context} stride {stride} rotary {inv_freq is not None}"
    assert_close(got, want, dtype, f"forward, {what}")
    for name, a, b in zip(
        "qkv", grads(got, (q, k, v), seed), grads(want, (q, k, v), seed), strict=True
    ):
        assert_close(a, b, dtype, f"d{name}, {what}")


@runs_triton
@pytest.mark.parametrize("context", [None, (4, 1), (-1, 3)])
def test_padded_in_place_matches_attention(context):
    """Read as views of a joint (B, T, 3, H, Dh) projection, as the layers hold it."""
    torch.manual_seed(1)
    B, T, H, D = 3, 21, 2, 8
    lengths = torch.tensor([21, 9, 0])
    qkv = torch.randn(B, T, 3, H, D, device=DEVICE, requires_grad=True)
    q, k, v = qkv.unbind(2)  # (B, T, H, Dh) each, strided
    got = padded_attention(q, k, v, lengths, context)  # (B, T, H, Dh)
    want = attention(*(x.transpose(1, 2) for x in (q, k, v)), lengths, context).transpose(1, 2)
    assert_close(got, want, torch.float32, "forward")
    assert got[1, 9:].abs().sum() == 0 and got[2].abs().sum() == 0
    assert_close(grads(got, (qkv,), 0)[0], grads(want, (qkv,), 0)[0], torch.float32, "dqkv")


@runs_triton
def test_half_rate_stride_matches_cached_attention():
    """Squeezeformer's middle blocks: frame j is in the chunk of full-rate frame 2 j."""
    torch.manual_seed(2)
    B, T, H, D, context = 2, 19, 2, 8, (5, 2)
    lengths = torch.tensor([19, 12])
    q, k, v = (torch.randn(B, T, H, D, device=DEVICE, requires_grad=True) for _ in range(3))
    got = padded_attention(q, k, v, lengths, context, stride=2)
    pos = torch.arange(T, device=DEVICE).expand(B, T)
    valid = pos < lengths.to(DEVICE)[:, None]
    heads = [x.transpose(1, 2) for x in (q, k, v)]
    want = cached_attention(*heads, pos, pos, valid, valid, context, stride=2).transpose(1, 2)
    assert_close(got, want, torch.float32, "forward")
    for a, b in zip(grads(got, (q, k, v), 1), grads(want, (q, k, v), 1), strict=True):
        assert_close(a, b, torch.float32, "grad")


@runs_triton
@pytest.mark.parametrize("context", [(4, 1, 2), (6, 2, 1), (3, 0, 3)])
def test_lookahead_tokens_match_block_processing(context):
    """Look-ahead tokens packed with their tables equal the dense look-ahead mask."""
    from suite.kernels.attention import masked_attention
    from suite.nn.lookahead import lookahead

    torch.manual_seed(3)
    T, H, D = 13, 2, 8
    lengths = torch.tensor([13, 7])
    tokens = lookahead(lengths, T, context, kernel=3)
    assert tokens.mask is not None  # short inputs: one dense mask
    B, S = lengths.shape[0], tokens.positions.shape[0]
    q, k, v = (torch.randn(B, H, S, D, requires_grad=True) for _ in range(3))
    keep = tokens.valid[:, None]
    want = masked_attention(q, k, v, tokens.mask, keep)  # (B, H, S, Dh)
    index, cu, chunks, extra = lookahead_tables(lengths, T, context)
    rows = [x.transpose(1, 2).reshape(B * S, H, D)[index].to(DEVICE) for x in (q, k, v)]
    got = packed_attention(*rows, cu, context=context[:2], chunks=chunks, extra=extra)
    want_rows = want.transpose(1, 2).reshape(B * S, H, D)[index]
    assert_close(got.cpu(), want_rows, torch.float32, "forward")
    for a, b in zip(grads(got.cpu(), (q, k, v), 2), grads(want_rows, (q, k, v), 2), strict=True):
        assert_close(a, b, torch.float32, "grad")


def test_allowed_keys_is_the_encoders_mask():
    for context in [None, (4, 1), (-1, 2), (0, 0), (7, 3)]:
        n = 17
        mask = attention_mask(torch.tensor([n]), n, context)[0, 0]
        assert torch.equal(allowed_keys(n, context), mask)


def test_rotate_rows_is_the_layers_rotary():
    torch.manual_seed(0)
    x, pos, inv_freq = torch.randn(7, 2, 12), torch.arange(3, 10), rotary_frequencies(12)
    want = rotate(x.transpose(0, 1)[None], pos, inv_freq)[0].transpose(0, 1)  # (N, H, Dh)
    torch.testing.assert_close(rotate_rows(x, pos, inv_freq), want)
    torch.testing.assert_close(rotate_rows(want, pos, inv_freq, inverse=True), x)


def test_pack_round_trip():
    x = torch.randn(3, 5, 2)
    lengths = torch.tensor([5, 0, 2])
    packed = pack(x, lengths)
    assert packed.shape == (7, 2)
    back = unpack(packed, lengths, 5)
    assert torch.equal(back[0], x[0]) and back[1].abs().sum() == 0
    assert torch.equal(back[2, :2], x[2, :2]) and back[2, 2:].abs().sum() == 0


@pytest.mark.skipif(INTERPRET, reason="the interpreter runs CPU tensors")
def test_cpu_tensors_without_interpreter_teach():
    q = torch.randn(4, 1, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        packed_attention(q, q, q, torch.tensor([0, 4]))


def test_lookahead_context_needs_tables():
    q = torch.randn(4, 1, 8)
    with pytest.raises(ValueError, match="look-ahead"):
        packed_attention_reference(q, q, q, torch.tensor([0, 4]), context=(4, 1, 2))


@runs_triton
@pytest.mark.parametrize("family", ["conformer", "squeezeformer"])
def test_encoders_with_the_triton_backend(family):
    """Whole tiny encoders (Squeezeformer's half-rate blocks included), outputs and gradients."""
    import suite
    from suite.nn.attention import set_attention_backend

    torch.manual_seed(4)
    encoder = suite.create_encoder(family, preset="tiny", causal=True, att_context=(8, 3))
    encoder = encoder.to(DEVICE).eval()
    x, lengths = torch.randn(2, 96, 80, device=DEVICE), torch.tensor([96, 50], device=DEVICE)
    outputs = []
    for backend in ("sdpa", "triton"):
        set_attention_backend(encoder, backend)
        encoder.zero_grad()
        out = encoder(x, lengths).features
        out.square().mean().backward()
        outputs.append((out, [p.grad.clone() for p in encoder.parameters()]))
    (want, want_grads), (got, got_grads) = outputs
    # On a GPU, convolutions run in TF32 by default and reductions in another order: through
    # whole encoders the fp32 tolerance widens there.
    scale = 1.0 if DEVICE == "cpu" else 10.0
    assert_close(got, want, torch.float32, "features", scale)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert_close(a, b, torch.float32, "parameter grad", scale)
