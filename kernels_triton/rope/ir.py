"""The RoPE kernel's IR for a GPU target, on any machine."""
from __future__ import annotations

import functools

from .._compile import compile_for_target
from .._env import compile_ir_elsewhere, kernels_interpreted, next_pow2
from .kernel import ROPE_WARPS, _block_rows, _rope_kernel


@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(heads: int = 64, v_dim: int = 512, rope_dim: int = 64, inverse: bool = True, arch: int = 90,
               varlen: bool = False) -> dict:
    """Compile the RoPE kernel for GPUTarget('cuda', arch, 32): {ttir, ttgir, llir, ptx}.

    heads is a compile-time constant of the kernel; v_dim only enters through the
    16-divisibility hints of the strides."""
    if rope_dim > v_dim:
        raise ValueError(f"rope_dim = {rope_dim} > v_dim = {v_dim}")
    if kernels_interpreted(_rope_kernel):
        return compile_ir_elsewhere("kernels_triton.rope.ir", dict(heads=heads, v_dim=v_dim, rope_dim=rope_dim,
                                                                   inverse=inverse, arch=arch, varlen=varlen))
    const = {"H": heads, "HALF": rope_dim // 2, "HALFP": next_pow2(rope_dim // 2), "BLOCK": _block_rows(rope_dim),
             "INVERSE": bool(inverse), "VARLEN": varlen}
    sig = {"x_ptr": "*bf16", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "seg_ptr": "*i32", "n_pos": "i32", "tab0": "i32",
           "stride_n": "i32", "stride_h": "i32", "col0": "i32"}
    sig.update({k: "constexpr" for k in const})
    div16 = [n for n, v in (("x_ptr", 16), ("cos_ptr", 16), ("sin_ptr", 16), ("stride_n", heads * v_dim),
                            ("stride_h", v_dim), ("col0", v_dim - rope_dim)) if v % 16 == 0]
    return compile_for_target(_rope_kernel, sig, const, div16, arch=arch, num_warps=ROPE_WARPS,
                              enable_fp_fusion=False)
