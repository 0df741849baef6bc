"""Stage kind `hca`: the key lists of an HCA layer (no indexer): the window, then every visible
compressed row (docs/semantics.md section 6).

Kernels: kernels_triton/hca/ (naive.py, kernel.py, cost.py, ir.py). The lists keep the visible rows
first, so the attention's causal bound skips the invisible blocks.
"""
from __future__ import annotations

from typing import Dict

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.hca import cost, ir, kernel, naive

from ..lang.spec import Compressor, Pipeline
from .base import Impl, InputDef, IRSection, Op, StageKind, sized

KEYS = Op(
    "hca.keys",
    "each query's key list: window ids, then every compressed row it sees (+ offset), -1 padded",
    writes=("out",),
    impls={
        "torch": Impl(naive.keys_chunk, "torch arange + mask", sized(cost.naive_temp_bytes, "chunk", "window", "rows")),
        "interpret": Impl(kernel.keys_chunk, "triton _keys_kernel [interpreter]"),
        "cuda": Impl(kernel.keys_chunk, "triton _keys_kernel"),
    },
)


def _inputs(pipe: Pipeline, c: Compressor, role: str) -> Dict[str, InputDef]:
    return {}     # the lists are positions only: the compressor's inputs are the compressor stage's


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    if pipe.layer != "hca":
        return {"": f"// pipeline {pipe.name!r} is a {pipe.layer.upper()} layer: no HCA key lists\n"}
    return {"": ir.compile_ir(ratio=pipe.ratio, window=pipe.attention.window, arch=arch)[level]}


KIND = StageKind(
    kind="hca",
    spec_type=Compressor,
    doc="HCA key lists: the window, then every visible compressed row (no indexer)",
    ops={"keys": KEYS},
    inputs=_inputs,
    ir=(IRSection("hca", "triton", "HCA key lists: window ids + every visible compressed row, -1 padded",
                  TRITON_LEVELS, _emit),),
)
