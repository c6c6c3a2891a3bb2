"""The Triton kernels compile for an H100 (sm_90) on a machine without a GPU: Triton's own
compiler and the ``ptxas`` it ships take them to machine code, which catches what the CPU
interpreter does not check (types, tile shapes for ``tl.dot``, shared memory). Slow on 2 cores."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

POINTERS = {
    "Q": "*{dt}", "K": "*{dt}", "V": "*{dt}", "O": "*{dt}", "DO": "*{dt}", "DK": "*{dt}",
    "DV": "*{dt}", "DQ": "*{dt}", "KN": "*{dt}", "VN": "*{dt}", "CK": "*{dt}", "CV": "*{dt}",
    "OUT": "*{dt}", "LSE": "*fp32", "DELTA": "*fp32", "FREQ": "*fp32", "OPART": "*fp32",
    "LPART": "*fp32", "STARTS": "*i32", "LENS": "*i32", "CHUNKS": "*i32", "POS": "*i32",
    "NEW": "*i32", "EXTRA": "*i8", "qk_scale": "fp32", "sm_scale": "fp32",
}  # fmt: skip


def compile_for_h100(fn, dtype: str, constexprs: dict, **options) -> int:
    """Shared memory bytes of ``fn`` compiled for sm_90 with ``dtype`` tensors."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {
        name: "constexpr" if name in constexprs else POINTERS.get(name, "i32").format(dt=dtype)
        for name in fn.arg_names
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    return kernel.metadata.shared


@pytest.mark.slow
@pytest.mark.parametrize("dtype,mask,rotary", [("bf16", 1, True), ("fp32", 2, False)])
def test_varlen_kernels_compile(dtype, mask, rotary):
    from suite.kernels import varlen_triton as kt

    precision = "ieee" if dtype == "fp32" else "tf32"
    tiles = [
        (kt._fwd_kernel, (128, 64)),
        (kt._bwd_kv_kernel, (64, 64)),
        (kt._bwd_q_kernel, (64, 64)),
    ]
    for fn, (m, n) in tiles:
        constexprs = dict(
            MASK=mask, ROTARY=rotary, BLOCK_M=m, BLOCK_N=n, BLOCK_D=64, PRECISION=precision
        )
        shared = compile_for_h100(fn, dtype, constexprs, num_warps=4, num_stages=2)
        assert shared <= 227 * 1024, f"{fn.__name__} needs {shared} bytes of shared memory"


@pytest.mark.slow
def test_stream_kernels_compile():
    from suite.kernels import stream_triton as kt

    constexprs = dict(MASK=1, SPLITS=4, BLOCK_M=16, BLOCK_N=64, BLOCK_D=64, PRECISION="tf32")
    compile_for_h100(kt._step_kernel, "bf16", constexprs, num_warps=4)
    compile_for_h100(kt._merge_kernel, "bf16", dict(SPLITS=4, BLOCK_M=16, BLOCK_D=64), num_warps=4)
