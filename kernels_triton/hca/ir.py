"""The HCA key-list kernel's IR for a GPU target, on any machine."""
from __future__ import annotations

import functools

from .._compile import compile_for_target
from .._env import compile_ir_elsewhere, kernels_interpreted
from .._window import window_pow2
from .kernel import KEYS_WARPS, ROW_BLOCK, _keys_kernel


@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(ratio: int = 128, window: int = 128, arch: int = 90, varlen: bool = False) -> dict:
    """Compile the key-list kernel for GPUTarget('cuda', arch, 32): {ttir, ttgir, llir, ptx} (`varlen`: the
    packed-batch variant)."""
    if kernels_interpreted(_keys_kernel):  # TRITON_INTERPRET=1 at import: compile in a child process
        return compile_ir_elsewhere("kernels_triton.hca.ir", dict(ratio=ratio, window=window, arch=arch,
                                                                     varlen=varlen))
    sig = {"out_ptr": "*i32", "seg_ptr": "*i32", "s_first": "i32", "rows": "i32", "idx_offset": "i32",
           "stride_o": "i32", "RATIO": "constexpr", "W": "constexpr", "WP": "constexpr", "BLOCK": "constexpr",
           "VARLEN": "constexpr"}
    const = {"RATIO": ratio, "W": window, "WP": window_pow2(window), "BLOCK": ROW_BLOCK, "VARLEN": varlen}
    return compile_for_target(_keys_kernel, sig, const, ["out_ptr", "stride_o"], arch=arch, num_warps=KEYS_WARPS)
