"""The self-index kernels' IR for a GPU target, on any machine."""
from __future__ import annotations

import functools

from .._compile import compile_for_target
from .._env import compile_ir_elsewhere, kernels_interpreted
from .kernel import (QBAR_WARPS, SCORE_STAGES, SCORE_WARPS, _codes_kernel, _qbar_kernel, _score_kernel, check_dim,
                     codes_constexprs, qbar_constexprs, score_constexprs)


@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(kernel: str = "score", dim: int = 512, ratio: int = 4, arch: int = 90, varlen: bool = False,
               heads: int = 64) -> dict:
    """Compile one self-index kernel ('codes', 'qbar': the head sum of `heads` query heads, or 'score') for
    GPUTarget('cuda', arch, 32): {ttir, ttgir, llir, ptx} (`varlen`: the score kernel's packed-batch variant)."""
    check_dim(dim)
    if kernels_interpreted(_score_kernel):  # TRITON_INTERPRET=1 at import: compile in a child process
        return compile_ir_elsewhere("kernels_triton.selfindex.ir", dict(kernel=kernel, dim=dim, ratio=ratio, arch=arch,
                                                                           varlen=varlen, heads=heads))
    if kernel == "codes":
        sig = {"rows_ptr": "*bf16", "codes_ptr": "*i32", "alpha_ptr": "*fp32", "n_rows": "i32", "stride_r": "i32",
               "stride_c": "i32"}
        const = codes_constexprs(dim)
        fn, div, opts = _codes_kernel, ["rows_ptr", "codes_ptr", "stride_r"], {}
    elif kernel == "qbar":
        sig = {"q_ptr": "*bf16", "limbs_ptr": "*i8", "scale_ptr": "*fp32", "stride_q": "i32", "stride_h": "i32",
               "stride_l": "i32"}
        const = qbar_constexprs(heads, dim)
        fn, div = _qbar_kernel, ["q_ptr", "limbs_ptr", "scale_ptr", "stride_q", "stride_h", "stride_l"]
        opts = {"num_warps": QBAR_WARPS}
    elif kernel == "score":
        sig = {"limbs_ptr": "*i8", "scale_ptr": "*fp32", "codes_ptr": "*i32", "alpha_ptr": "*fp32",
               "out_ptr": "*fp32", "seg_ptr": "*i32", "s_first": "i32", "n_q": "i32", "T": "i32", "stride_l": "i32",
               "stride_c": "i32", "stride_o": "i32"}
        const = score_constexprs(dim, ratio, varlen)
        fn, div = _score_kernel, ["limbs_ptr", "scale_ptr", "out_ptr", "stride_l", "stride_o"]
        opts = {"num_warps": SCORE_WARPS, "num_stages": SCORE_STAGES}
    else:
        raise ValueError(f"unknown self-index kernel {kernel!r}; valid: codes, qbar, score")
    sig.update({k: "constexpr" for k in const})
    return compile_for_target(fn, sig, const, div, arch=arch, **opts)
