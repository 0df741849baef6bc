"""Stage kind `quant`: the official quantise-dequantise steps (docs/semantics.md section 5) where no
other kernel fuses them, and the FP8 packing of the index keys.

Kernels: kernels_triton/quant/ (naive.py, kernel.py, cost.py, ir.py). The compressor kernels fuse the
step into their epilogue; what is left here is
  quant.rows          the raw `kv` rows' FP8 step, fused into the copy the composer makes anyway
                      (kv -> kv_all) or, without a compressor, one pass into a quantised copy
  quant.pack_keys     index keys -> FP8 e4m3 values + one power-of-two scale per row (the score's operand)
  quant.pack_queries  the same for a chunk's `idx_q`, one scale per (query, head), once per chunk
"""
from __future__ import annotations

from typing import Dict, Optional

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.quant import cost, ir, kernel, naive

from ..lang.spec import Indexer, Pipeline, Quant
from .base import Impl, IRSection, Op, StageKind, sized

ROWS = Op(
    "quant.rows",
    "out <- src with the first `channels` of every row quantise-dequantised (blocks of `block`)",
    writes=("out",),
    impls={
        "torch": Impl(naive.quant_rows, "torch naive.quant_rows", sized(cost.naive_rows_temp_bytes, "rows", "dim")),
        "interpret": Impl(kernel.quant_rows, "triton _rows_kernel [interpreter]"),
        "cuda": Impl(kernel.quant_rows, "triton _rows_kernel: one read, one write"),
    },
)

# one kernel packs any rows (quant.kernel.pack_rows): the keys once, the queries once per chunk
PACK_IMPLS = {
    "torch": Impl(naive.pack_rows, "torch naive.pack_rows", sized(cost.naive_pack_temp_bytes, "rows", "dim")),
    "interpret": Impl(kernel.pack_rows, "triton _pack_kernel [interpreter]"),
    "cuda": Impl(kernel.pack_rows, "triton _pack_kernel"),
}

PACK_KEYS = Op(
    "quant.pack_keys",
    "index keys -> quantise-dequantised, packed as FP8 e4m3 values + one power-of-two scale per row",
    writes=("x8", "x_scale"),
    impls=PACK_IMPLS,
)

# a chunk's index queries, one scale per (query, head): once per chunk here, not in every score program
# (whose prologue it made spill: kernels_triton/indexer/kernel.py)
PACK_QUERIES = Op(
    "quant.pack_queries",
    "a chunk's index queries -> quantise-dequantised, packed as FP8 e4m3 values + one power-of-two scale per "
    "(query, head)",
    writes=("x8", "x_scale"),
    impls=PACK_IMPLS,
)


def args(q: Optional[Quant], channels: int) -> dict:
    """A fused quantisation's keyword arguments (the compressor's), none when q is None."""
    if q is None:
        return {}
    return {"quant_format": q.format, "quant_block": q.block, "quant_channels": channels}


def index_quant(spec: Pipeline) -> Optional[Quant]:
    """The lightning indexer's quantisation (None: bf16 scores, or no lightning indexer)."""
    return spec.indexer.quant if isinstance(spec.indexer, Indexer) else None


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    parts = {}
    a = pipe.attention
    if a.kv_quant is not None:
        parts["kv"] = ir.compile_ir("rows", a.kv_quant.format, a.kv_quant.block, a.qk_dim, a.kv_quant_channels,
                                    arch=arch)[level]
    iq = index_quant(pipe)
    if iq is not None:
        parts["keys"] = ir.compile_ir("pack", iq.format, iq.block, pipe.indexer.dim, pipe.indexer.dim,
                                      arch=arch, fp8_mma=pipe.indexer.fp8_mma)[level]
    return parts or {"": f"// pipeline {pipe.name!r} has no quantisation step: bf16 throughout\n"}


KIND = StageKind(
    kind="quant",
    spec_type=Quant,
    doc="the official FP8 / FP4 quantise-dequantise steps not fused elsewhere, and the FP8 key packing",
    ops={"rows": ROWS, "pack_keys": PACK_KEYS, "pack_queries": PACK_QUERIES},
    inputs=lambda pipe, stage, role: {},
    ir=(IRSection("quant", "triton", "quantising copy of the kv rows (FP8) and FP8 packing of the index keys "
                                     "and queries (one kernel)",
                  TRITON_LEVELS, _emit),),
)
