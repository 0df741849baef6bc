"""Stage kind `selfindex`: the 1-bit self-index (docs/semantics.md section 7), used where an indexer goes.

Kernels: kernels_triton/selfindex/ (naive.py, kernel.py, cost.py, ir.py). The codes of every selectable
row are made once ahead of the loop (68 B per row for D = 512); per chunk the 1-bit scores go into
the same bounded score buffer as the lightning indexer's and the same selection op reads them.
"""
from __future__ import annotations

from typing import Dict, Optional

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.selfindex import cost, ir, kernel, naive

from ..lang.spec import Pipeline, SelfIndex
from .base import Impl, InputDef, IRSection, Op, StageKind, sized

CODES = Op(
    "selfindex.codes",
    "sign bits (1 per channel, 32 per int32 word) and mean |K| of every selectable row",
    writes=("codes_out", "alpha_out"),
    impls={
        "torch": Impl(naive.codes, "torch sign pack", sized(cost.naive_codes_temp_bytes, "batch", "rows", "dim")),
        "interpret": Impl(kernel.codes, "triton _codes_kernel [interpreter]"),
        "cuda": Impl(kernel.codes, "triton _codes_kernel"),
    },
)

SCORE = Op(
    "selfindex.score",
    "fp32 1-bit scores alpha_t * qbar . sign(K_t) of a query chunk against the rows it can see, into `out`",
    writes=("out",),
    impls={
        "torch": Impl(naive.score_chunk, "torch qbar @ unpacked signs",
                      sized(cost.naive_score_temp_bytes, "chunk", "rows", "heads", "dim")),
        "interpret": Impl(kernel.score_chunk, "triton _qbar_kernel and _score_kernel [interpreter]",
                          sized(cost.interpret_qbar_bytes, "chunk", "heads", "dim")),
        "cuda": Impl(kernel.score_chunk, "triton _qbar_kernel (the head sum as three int8 limbs of a fixed point) "
                     "and _score_kernel: bits unpacked to int8 +-1, three exact int8 wgmma dots per tile, key tiles "
                     "split over a second grid axis",
                     sized(cost.kernel_qbar_bytes, "chunk", "dim")),
    },
)


def _inputs(pipe: Pipeline, ix: SelfIndex, role: str) -> Dict[str, InputDef]:
    return {}     # no indexer inputs: the attention's q and key rows are the index


def _limits(pipe: Pipeline, ix: SelfIndex, backend: str) -> Optional[str]:
    # the rows it scores are the attention's (any multiple of 32 channels: the spec checks that)
    return kernel.kernel_limits(pipe.attention.qk_dim) if backend == "cuda" else None


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    if not isinstance(pipe.indexer, SelfIndex):
        return {"": f"// pipeline {pipe.name!r} has no self-index\n"}
    d, h = pipe.attention.qk_dim, pipe.attention.heads
    return {part: ir.compile_ir(part, dim=d, ratio=pipe.ratio, arch=arch, heads=h)[level]
            for part in ("codes", "qbar", "score")}


KIND = StageKind(
    kind="selfindex",
    spec_type=SelfIndex,
    doc="1-bit self-index: sign codes of the attention rows score the head-summed query (then the same top-k)",
    ops={"codes": CODES, "score": SCORE},
    inputs=_inputs,
    limits=_limits,
    ir=(IRSection("selfindex", "triton", "1-bit self-index: sign codes + mean |K|, and the 1-bit score",
                  TRITON_LEVELS, _emit),),
)
