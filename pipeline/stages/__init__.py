"""The stage registry: one entry (a StageKind) per stage kind, each over its kernel folder.

    compressor  kernels_triton/compressor/       role cmp (attention rows), idx (index keys)
    indexer     kernels_triton/indexer/          score + top-k
    hca         kernels_triton/hca/              HCA key lists: window + every visible compressed row
    selfindex   kernels_triton/selfindex/        1-bit self-index: sign codes + scores (then the indexer's top-k)
    attention   kernels_tilelang/sparse_mla/
    rope        kernels_triton/rope/             the program's RoPE tables, the inverse RoPE
    quant       kernels_triton/quant/            the FP8 / FP4 steps not fused elsewhere, FP8 key packing
    glue        copies between stage buffers
    cp          context parallelism: halo exchange, all-gathers, local KV tables
    varlen      kernels_triton/varlen/           packed variable-length batches: the segment tables

A new stage kind is one more module here (its entry) and one kernel folder (naive.py beside
the kernel, cost.py, ir.py). `OPS` is the one table the interpreter looks calls up in.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..lang.spec import Indexer, Pipeline, SelfIndex
from . import attention, compressor, cp, glue, hca, indexer, quant, rope, selfindex, varlen
from .base import BACKENDS, Impl, InputDef, IRSection, Op, StageKind

KINDS: Dict[str, StageKind] = {k.kind: k for k in (compressor.KIND, indexer.KIND, selfindex.KIND, hca.KIND,
                                                   attention.KIND, rope.KIND, quant.KIND, glue.KIND, cp.KIND,
                                                   varlen.KIND)}
OPS: Dict[str, Op] = {op.name: op for k in KINDS.values() for op in k.ops.values()}
IR_SECTIONS: Dict[str, IRSection] = {s.name: s for k in KINDS.values() for s in k.ir}


def stages_of(spec: Pipeline) -> List[Tuple[str, StageKind, object]]:
    """(role, entry, stage spec) of every stage a pipeline has, in input order (spec.layer says which)."""
    out = [("attention", KINDS["attention"], spec.attention)]
    if spec.compressor is not None:
        out.append(("cmp", KINDS["compressor"], spec.compressor))
    if spec.layer == "hca":
        out.append(("hca", KINDS["hca"], spec.compressor))
    if isinstance(spec.indexer, SelfIndex):
        out.append(("selfindex", KINDS["selfindex"], spec.indexer))
    elif isinstance(spec.indexer, Indexer):
        out.append(("indexer", KINDS["indexer"], spec.indexer))
        if spec.indexer.compressor is not None:
            out.append(("idx", KINDS["compressor"], spec.indexer.compressor))
    return out


def unsupported(spec: Pipeline, backend: str) -> Optional[str]:
    """Why `backend`'s kernels cannot run this pipeline (None when they can), before any work."""
    for role, kind, stage in stages_of(spec):
        why = kind.limits(spec, stage, backend)
        if why is not None:
            return why
    return None


__all__ = ["BACKENDS", "IR_SECTIONS", "Impl", "InputDef", "IRSection", "KINDS", "OPS", "Op", "StageKind",
           "stages_of", "unsupported"]
