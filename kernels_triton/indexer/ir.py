"""The indexer kernels' IR for a GPU target, on any machine."""
from __future__ import annotations

import functools

from .._compile import compile_for_target
from .._env import compile_ir_elsewhere, kernels_interpreted
from .._window import window_pow2
import torch

from ..quant.formats import keys_dtype
from .cost import SCORE_TILE_KEYS, select_capacity, select_segments
from .kernel import (SELECT_SEG_BLOCK, SELECT_STEP_TILES, _score_kernel, _select_kernel, kernel_limits,
                     padded_dim, padded_heads, score_block_queries, score_launch_options, select_launch_options)
from .score_gluon import (GLUON_OPERANDS, GLUON_STAGES, GLUON_WARPS, _score_gluon, gluon_walk, gluon_walk_fits,
                          group_maxima_fit)
from .score_gluon import layouts as gluon_layouts


@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(kernel: str = "score", heads: int = 64, dim: int = 128, ratio: int = 4, topk: int = 512,
               window: int = 0, arch: int = 90, q_format: str = "e2m1", varlen: bool = False,
               group_maxima: bool = False, round_bf16: bool = False, fp8_mma: bool = False) -> dict:
    """Compile one indexer kernel ('score', 'score_fp8' on operands packed for the quantisation `q_format`,
    or 'select') for GPUTarget('cuda', arch, 32): {ttir, ttgir, llir, ptx}. `varlen`: the packed-batch
    variant (each query reads its segment row). 'score_fp8' is the kernel score_chunk_fp8 runs for these sizes:
    the Gluon walk (score_gluon.py) where it fits, else _score_kernel. `group_maxima`: the variants that write
    (score_fp8, where group_maxima_fit) and read (select) the selection's group maxima, as the composed program
    runs them on the GPU (pipeline/stages/indexer.writes_group_maxima). `round_bf16`: the scores rounded to bf16
    as the official code's (both walks' ROUND). `fp8_mma`: 'score_fp8' on e4m3 operands as FP8 (Indexer.fp8_mma).

    Sizes the kernels cannot take are refused first (kernel_limits), so nothing is compiled for them."""
    why = kernel_limits(heads, dim, topk)
    if why is not None:
        raise ValueError(why)
    if kernels_interpreted(_score_kernel):  # TRITON_INTERPRET=1 at import: compile in a child process
        return compile_ir_elsewhere("kernels_triton.indexer.ir", dict(kernel=kernel, heads=heads, dim=dim,
                                                                      ratio=ratio, topk=topk, window=window,
                                                                      arch=arch, q_format=q_format, varlen=varlen,
                                                                      group_maxima=group_maxima,
                                                                      round_bf16=round_bf16, fp8_mma=fp8_mma))
    if kernel in ("score", "score_fp8"):
        fp8 = kernel == "score_fp8"
        mma_dtype = keys_dtype(q_format, fp8_mma) if fp8 else torch.bfloat16
        operand = 2 if mma_dtype == torch.float8_e4m3fn else 1
        if gluon_walk_fits(heads, dim, mma_dtype, varlen):   # the walk score_chunk(_fp8) runs
            # unpacked rows, operands by TMA; with the selection's group maxima where the composer asks for them
            groups = (select_capacity(topk) // SCORE_TILE_KEYS
                      if group_maxima and group_maxima_fit(heads, dim, mma_dtype, varlen, topk) else 1)
            walk = gluon_walk(groups > 1)
            q_l, k_l = gluon_layouts(walk, mma_dtype)
            dt = "fp8e4nv" if operand == 2 else "bf16"
            sig = {"q_desc": f"tensordesc<{dt}[{walk.block_queries * heads}, {dim}],{q_l!r}>",
                   "qs_ptr": "*fp32", "w_ptr": "*fp32", "k_desc": f"tensordesc<{dt}[{SCORE_TILE_KEYS}, {dim}],"
                   f"{k_l!r}>", "ks_ptr": "*fp32", "out_ptr": "*fp32", "gm_ptr": "*fp32", "s_first": "i32",
                   "n_q": "i32", "T": "i32", "stride_ws": "i32", "stride_os": "i32", "stride_gs": "i32"}
            const = {"RATIO": ratio, "HI": heads, "DI": dim, "BQ": walk.block_queries, "BT": SCORE_TILE_KEYS,
                     "STAGES": GLUON_STAGES, "G": groups, "SQ": score_block_queries(heads), "NC": walk.consumers,
                     "WORKER_WARPS": walk.worker_warps, "WORKER_REGS": walk.worker_regs, "ROUND": round_bf16,
                     "SCALED": fp8, "MMA_K": GLUON_OPERANDS[mma_dtype][1]}
            fn, opts = _score_gluon, {"num_warps": GLUON_WARPS, "maxnreg": walk.maxnreg}
            div = ["qs_ptr", "w_ptr", "ks_ptr", "out_ptr", "gm_ptr", "stride_ws", "stride_os", "stride_gs"]
        else:
            packed = "*fp8e4nv" if operand == 2 else "*bf16"
            sig = {"q_ptr": packed if fp8 else "*bf16", "qs_ptr": "*fp32", "w_ptr": "*fp32", "k_ptr": packed,
                   "ks_ptr": "*fp32", "out_ptr": "*fp32", "seg_ptr": "*i32", "s_first": "i32", "n_q": "i32",
                   "T": "i32", "stride_qs": "i32", "stride_ws": "i32", "stride_kt": "i32", "stride_os": "i32"}
            const = {"RATIO": ratio, "HI": heads, "DI": dim, "HP": padded_heads(heads), "DP": padded_dim(dim),
                     "BQ": score_block_queries(heads), "BT": SCORE_TILE_KEYS, "IEEE": False, "QUANT": fp8,
                     "OPERAND": operand, "VARLEN": varlen, "EMULATE": False, "ROUND": round_bf16}
            fn, opts = _score_kernel, score_launch_options(operand)
            div = ["q_ptr", "qs_ptr", "w_ptr", "k_ptr", "ks_ptr", "out_ptr", "stride_qs", "stride_ws", "stride_kt",
                   "stride_os"]
        sig.update({k: "constexpr" for k in const})
    elif kernel == "select":
        sig = {"sc_ptr": "*fp32", "gm_ptr": "*fp32", "cand_ptr": "*i32", "out_ptr": "*i32", "seg_ptr": "*i32",
               "s_first": "i32", "n_q": "i32", "k_eff": "i32", "idx_offset": "i32", "stride_s": "i32",
               "stride_g": "i32", "stride_c": "i32", "stride_o": "i32",
               "RATIO": "constexpr", "CAP": "constexpr", "W": "constexpr", "WP": "constexpr",
               "EMULATE": "constexpr", "VARLEN": "constexpr", "SEGS": "constexpr", "SEG_BLK": "constexpr",
               "HAS_GM": "constexpr", "VEC4": "constexpr", "STEP": "constexpr"}
        const = {"RATIO": ratio, "CAP": select_capacity(topk), "W": window, "WP": window_pow2(window),
                 "EMULATE": False, "VARLEN": varlen, "SEGS": select_segments(topk), "SEG_BLK": SELECT_SEG_BLOCK,
                 "HAS_GM": group_maxima, "VEC4": True, "STEP": SELECT_STEP_TILES}
        fn, opts = _select_kernel, select_launch_options(topk)
        div = ["sc_ptr", "gm_ptr", "cand_ptr", "out_ptr", "stride_s", "stride_g", "stride_c", "stride_o"]
    else:
        raise ValueError(f"unknown indexer kernel {kernel!r}; valid: score, score_fp8, select")
    return compile_for_target(fn, sig, const, div, arch=arch, **opts)
