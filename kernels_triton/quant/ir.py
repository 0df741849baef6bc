"""The quantisation kernels' IR for a GPU target, on any machine."""
from __future__ import annotations

import functools

import torch

from .._compile import compile_for_target
from .._env import compile_ir_elsewhere, kernels_interpreted
from .formats import keys_dtype
from .kernel import (PACK_ELEMS, PACK_WARPS, ROWS_WARPS, _pack_kernel, _rows_kernel, _rows_tile, format_constexprs,
                     kernel_limits)


@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(kernel: str = "rows", fmt: str = "e4m3", block: int = 64, dim: int = 512, channels: int = 448,
               arch: int = 90, fp8_mma: bool = False) -> dict:
    """Compile the quantising copy ('rows') or the key packing ('pack', into FP8 values where the score multiplies
    them so: formats.keys_dtype(fmt, fp8_mma)) for GPUTarget('cuda', arch, 32)."""
    why = kernel_limits(dim, block, channels)
    if why:
        raise ValueError(why)
    if kernels_interpreted(_rows_kernel):  # TRITON_INTERPRET=1 at import: compile in a child process
        return compile_ir_elsewhere("kernels_triton.quant.ir", dict(kernel=kernel, fmt=fmt, block=block, dim=dim,
                                                                    channels=channels, arch=arch, fp8_mma=fp8_mma))
    fc = format_constexprs(fmt)
    if kernel == "rows":
        sig = {"src_ptr": "*bf16", "out_ptr": "*bf16", "n_rows": "i32", "rows_per_b": "i32", "stride_sb": "i64",
               "stride_sr": "i32", "stride_ob": "i64", "stride_or": "i32"}
        dp, br = _rows_tile(dim)
        const = dict(D=dim, DP=dp, BR=br, QB=block, QN=channels, **fc)
        fn, div, warps = _rows_kernel, ["src_ptr", "out_ptr", "stride_sr", "stride_or"], ROWS_WARPS
    elif kernel == "pack":
        fp8 = keys_dtype(fmt, fp8_mma) == torch.float8_e4m3fn   # the values' dtype on the GPU (pack_rows's cast rounds)
        sig = {"k_ptr": "*bf16", "k8_ptr": "*fp8e4nv" if fp8 else "*bf16", "s_ptr": "*fp32", "n_rows": "i32"}
        dp, br = _rows_tile(dim, PACK_ELEMS)
        const = dict(D=dim, DP=dp, BR=br, QB=block, CAST_ROUNDS=fp8, **fc)
        fn, div, warps = _pack_kernel, ["k_ptr", "k8_ptr", "s_ptr"], PACK_WARPS
    else:
        raise ValueError(f"unknown quantisation kernel {kernel!r}; valid: rows, pack")
    sig.update({k: "constexpr" for k in const})
    return compile_for_target(fn, sig, const, div, arch=arch, num_warps=warps)
