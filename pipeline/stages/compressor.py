"""Stage kind `compressor`: gated pooling of every m tokens + RMSNorm + RoPE (+ Hadamard).

Kernels: kernels_triton/compressor/ (naive.py, kernel.py, cost.py, ir.py). A pipeline has up to
two: role `cmp` (the attention's compressed KV rows) and role `idx` (the indexer's keys).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.compressor import cost, ir, kernel, naive
from kernels_triton.rope.tables import Rotary

from ..lang.spec import Compressor, Pipeline, RoPE
from .base import Impl, InputDef, IRSection, Op, StageKind, sized
from .quant import args as quant_args
from .quant import index_quant


def rotary(rope: Optional[RoPE]) -> Optional[Rotary]:
    """The plain kernel parameters of a spec's RoPE (None: no RoPE)."""
    if rope is None:
        return None
    if rope.yarn is None:
        return Rotary(rope.dim, float(rope.base))
    y = rope.yarn
    return Rotary(rope.dim, float(y.base), float(y.factor), int(y.original_seq_len), float(y.beta_fast),
                  float(y.beta_slow))


def params(c: Compressor) -> dict:
    """The compress op's constant arguments for a Compressor spec (the RoPE tables are passed apart)."""
    return {"ratio": c.ratio, "overlap": c.overlap, "hadamard": c.hadamard, "eps": float(c.norm_eps)}


def role_quant(pipe: Pipeline, role: str) -> dict:
    """The quantisation a compressor fuses into its epilogue (quant.args): role 'cmp' the attention rows'
    (kv_quant, all but the RoPE channels), role 'idx' the index keys' (the indexer's, every channel)."""
    if role == "cmp":
        return quant_args(pipe.attention.kv_quant, pipe.attention.kv_quant_channels)
    iq = index_quant(pipe)
    return quant_args(iq, pipe.indexer.dim if iq is not None else 0)


COMPRESS = Op(
    "compressor.compress",
    "rows [row_start, row_end) of a compressor into `out` (bf16 [B, rows, D])",
    writes=("out",),
    impls={
        "torch": Impl(naive.compress, "torch naive.compress",
                      sized(cost.naive_temp_bytes, "batch", "rows", "ratio", "dim", "overlap")),
        "interpret": Impl(kernel.compress, "triton _compress_kernel [interpreter]"),
        "cuda": Impl(kernel.compress, "triton _compress_kernel"),
    },
)


def _inputs(pipe: Pipeline, c: Compressor, role: str) -> Dict[str, InputDef]:
    cd = c.coff * c.dim
    return {
        f"{role}_kv": InputDef(lambda B, S: (B, S, cd), torch.float32, True, "compressor values"),
        f"{role}_gate": InputDef(lambda B, S: (B, S, cd), torch.float32, True, "compressor gate logits"),
        f"{role}_ape": InputDef(lambda B, S: (c.ratio, cd), torch.float32, False, "per-slot gate bias"),
        f"{role}_norm": InputDef(lambda B, S: (c.dim,), torch.float32, False, "RMSNorm weight"),
    }


def _limits(pipe: Pipeline, c: Compressor, backend: str) -> Optional[str]:
    if backend == "torch":
        return None
    return kernel.kernel_limits(c.dim, c.ratio, c.hadamard)


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    parts = {}
    for part, role, c in (("kv", "cmp", pipe.compressor), ("idx", "idx", getattr(pipe.indexer, "compressor", None))):
        if c is None:
            continue
        parts[part] = ir.compile_ir(dim=c.dim, ratio=c.ratio, overlap=c.overlap, hadamard=c.hadamard,
                                    rope_dim=c.rope.dim if c.rope else 0, arch=arch,
                                    **role_quant(pipe, role))[level]
    return parts or {"": f"// pipeline {pipe.name!r} ({pipe.layer.upper()} layer) has no compressor: no "
                         f"compressor kernel\n"}


KIND = StageKind(
    kind="compressor",
    spec_type=Compressor,
    doc="gated pooling of every m tokens, RMSNorm, RoPE (+ Hadamard): one kernel per compressor",
    ops={"compress": COMPRESS},
    inputs=_inputs,
    limits=_limits,
    ir=(IRSection("compressor", "triton", "gated pooling + RMSNorm + RoPE (+ Hadamard): one kernel per compressor",
                  TRITON_LEVELS, _emit),),
)
