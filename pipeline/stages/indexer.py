"""Stage kind `indexer`: the lightning indexer score and its top-k selection.

Kernels: kernels_triton/indexer/ (naive.py, kernel.py, cost.py, ir.py).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.indexer import cost, ir, kernel, naive
from kernels_triton.indexer.score_gluon import group_maxima_fit
from kernels_triton.quant.formats import keys_dtype

from ..lang.spec import Indexer, Pipeline, Quant
from .base import Impl, InputDef, IRSection, Op, StageKind, sized


SCORE = Op(
    "indexer.score",
    "fp32 scores of a query chunk against the key rows it can see, into `out` (never [S, T]); with `gmax`, each "
    "row's group maxima for the selection too",
    writes=("out", "gmax"),
    impls={
        "torch": Impl(naive.score_chunk, "torch einsum [n, HI, T]",
                      sized(cost.naive_score_temp_bytes, "chunk", "rows", "heads", "dim")),
        "interpret": Impl(kernel.score_chunk, "triton _score_kernel [interpreter]",
                          sized(cost.interpret_score_temp_bytes, "chunk", "rows", "heads", "dim")),
        "cuda": Impl(kernel.score_chunk, "gluon _score_gluon on bf16 operands (64 heads x 128 dims, unpacked "
                     "rows: as for FP8, with k16 wgmma steps; else triton _score_kernel): wgmma over visible key "
                     "tiles"),
    },
)

SCORE_FP8 = Op(
    "indexer.score_fp8",
    "the same scores on the packed operands (quant.pack_queries, quant.pack_keys): FP8 MMAs, the scales outside; "
    "with `gmax`, each row's group maxima for the selection too",
    writes=("out", "gmax"),
    impls={
        "torch": Impl(naive.score_chunk_fp8, "torch dequantise + einsum [n, HI, T]",
                      sized(cost.naive_score_fp8_temp_bytes, "chunk", "rows", "heads", "dim")),
        "interpret": Impl(kernel.score_chunk_fp8, "triton _score_kernel QUANT [interpreter, fp32 operands]",
                          sized(cost.interpret_score_temp_bytes, "chunk", "rows", "heads", "dim")),
        "cuda": Impl(kernel.score_chunk_fp8, "gluon _score_gluon (64 heads x 128 dims, unpacked rows: four "
                     "consumer warpgroups of 2 queries with the group maxima, two of 4 without, keys by "
                     "TMA; else triton _score_kernel QUANT): wgmma on the packed values (FP8, or bf16 for V3.2's "
                     "e4m3 values) over visible key tiles"),
    },
)

SELECT = Op(
    "indexer.select",
    "each query's key list: window ids, then the top-k visible rows (+ offset), -1 padded",
    writes=("out", "cand"),
    impls={
        "torch": Impl(naive.select_chunk, "torch topk on packed keys",
                      sized(cost.naive_select_temp_bytes, "chunk", "rows")),
        "interpret": Impl(kernel.select_chunk, "triton _select_kernel [interpreter]"),
        "cuda": Impl(kernel.select_chunk, "triton _select_kernel: group-max threshold (the score's `gmax` when "
                     "given), radix select"),
    },
)


def writes_group_maxima(impl: Dict[str, str], quant: Optional[Quant], heads: int, dim: int, topk: int,
                        packed: bool, fp8_mma: bool = False) -> bool:
    """Does the score write the selection's group maxima (`gmax`), so that the selection skips its pass 1? The
    Gluon walk does (score_gluon.group_maxima_fit: FP8 or bf16 operands), with the score op (`indexer.score_fp8`
    with a `quant`, else `indexer.score` on bf16 operands) and the selection on the GPU kernels; `fp8_mma`: as
    Indexer.fp8_mma."""
    op, operand = (("indexer.score_fp8", keys_dtype(quant.format, fp8_mma)) if quant is not None
                   else ("indexer.score", torch.bfloat16))
    return (impl.get(op) == "cuda" and impl.get("indexer.select") == "cuda"
            and group_maxima_fit(heads, dim, operand, packed, topk))


def bf16_scores(spec: Pipeline) -> bool:
    """Does the pipeline's lightning indexer round its score to bf16 (Indexer.score_rounding, the official code's)?"""
    return isinstance(spec.indexer, Indexer) and spec.indexer.score_rounding == "bf16"


def _inputs(pipe: Pipeline, ix: Indexer, role: str) -> Dict[str, InputDef]:
    out = {
        "idx_q": InputDef(lambda B, S: (B, S, ix.heads, ix.dim), torch.bfloat16, True, "indexer queries"),
        "idx_w": InputDef(lambda B, S: (B, S, ix.heads), torch.float32, True, "indexer head weights"),
    }
    if ix.compressor is None:
        out["idx_k"] = InputDef(lambda B, S: (B, S, ix.dim), torch.bfloat16, True, "uncompressed index keys")
    return out


def _limits(pipe: Pipeline, ix: Indexer, backend: str) -> Optional[str]:
    if backend == "torch":
        return None
    return kernel.kernel_limits(ix.heads, ix.dim, ix.topk)


def _no_indexer(pipe: Pipeline) -> Dict[str, str]:
    if pipe.indexer is not None:   # a self-index: its scores are `selfindex`'s, the top-k is this selection
        return {"": f"// pipeline {pipe.name!r} has no lightning indexer (its index: see the selfindex stage)\n"}
    return {"": f"// pipeline {pipe.name!r} is a {pipe.layer.upper()} layer: no indexer, no top-k\n"}


def _emit_score(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    ix = pipe.indexer
    if not isinstance(ix, Indexer):
        return _no_indexer(pipe)
    # the packed operands' kernel with a quantisation, the raw bf16 one without
    packed = {"q_format": ix.quant.format, "fp8_mma": ix.fp8_mma} if ix.quant is not None else {}
    return {"": ir.compile_ir("score_fp8" if packed else "score", ix.heads, ix.dim, pipe.ratio, ix.topk, arch=arch,
                              group_maxima=_gpu_group_maxima(ix), round_bf16=bf16_scores(pipe), **packed)[level]}


def _emit_select(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    ix = pipe.indexer
    if ix is None:
        return _no_indexer(pipe)
    # a self-index has no heads/dim of its own: the selection kernel does not depend on them
    sizes = dict(heads=ix.heads, dim=ix.dim) if isinstance(ix, Indexer) else {}
    return {"": ir.compile_ir("select", ratio=pipe.ratio, topk=ix.topk, window=pipe.attention.window, arch=arch,
                              group_maxima=isinstance(ix, Indexer) and _gpu_group_maxima(ix), **sizes)[level]}


def _gpu_group_maxima(ix: Indexer) -> bool:
    # the kernels a B = 1 run on the GPU backend takes (the IR is of those)
    gpu = {"indexer.score": "cuda", "indexer.score_fp8": "cuda", "indexer.select": "cuda"}
    return writes_group_maxima(gpu, ix.quant, ix.heads, ix.dim, ix.topk, packed=False, fp8_mma=ix.fp8_mma)


KIND = StageKind(
    kind="indexer",
    spec_type=Indexer,
    doc="lightning indexer score over the visible key tiles, then the partial top-k",
    ops={"score": SCORE, "score_fp8": SCORE_FP8, "select": SELECT},
    inputs=_inputs,
    limits=_limits,
    ir=(IRSection("indexer", "triton", "fused score: wgmma (FP8 with the quantisation; V4's in Gluon) over "
                                       "visible key tiles, ReLU-weighted head sum",
                  TRITON_LEVELS, _emit_score),
        IRSection("topk", "triton", "partial top-k: window ids, group-max threshold, compaction, bitwise "
                                    "K-th-key select", TRITON_LEVELS, _emit_select)),
)
