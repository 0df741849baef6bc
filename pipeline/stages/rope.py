"""Stage kind `rope`: the program's RoPE tables, and the IR of the in-place inverse RoPE kernel.

Kernels: kernels_triton/rope/ (tables.py, naive.py, kernel.py, cost.py, ir.py). A program builds
its cos/sin tables once, as buffers it plans, and every rotation reads rows of them: the
compressors' rows at position i*m (in their kernels' epilogues), the attention output's rows at the
query positions (in the attention kernel's epilogue: `attention.attend` takes the tables; where the
kernel cannot fuse it, its wrapper runs kernels_triton's RoPE kernel on the output, the same bits).
"""
from __future__ import annotations

from typing import Dict

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.rope import ir, tables

from ..lang.spec import Pipeline, RoPE
from ..program import register_param_type
from .base import Impl, IRSection, Op, StageKind, sized

register_param_type(tables.Rotary)


TABLES = Op(
    "rope.tables",
    "cos, sin [P, rot_dim // 2] fp32 <- the RoPE tables of positions 0..P-1",
    writes=("cos", "sin"),
    impls={b: Impl(tables.fill_tables, "torch cos/sin", sized(tables.tables_temp_bytes, "positions", "rot_dim"))
           for b in ("torch", "interpret", "cuda")},
)


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    a = pipe.attention
    if a.inverse_rope is None:
        return {"": f"// pipeline {pipe.name!r} has no inverse RoPE of its output: no kernel\n"}
    return {"": ir.compile_ir(heads=a.heads, v_dim=a.v_dim, rope_dim=a.inverse_rope.dim, arch=arch)[level]}


KIND = StageKind(
    kind="rope",
    spec_type=RoPE,
    doc="RoPE tables of a program (the rotations are fused into the compressor and attention kernels)",
    ops={"tables": TABLES},
    inputs=lambda pipe, stage, role: {},
    ir=(IRSection("rope", "triton", "inverse RoPE of the output's last dims, in place: the attention wrapper's "
                  "fallback where its kernel cannot fuse it (sparse_mla.kernel.rope_fusable)",
                  TRITON_LEVELS, _emit),),
)
