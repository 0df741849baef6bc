"""Stage kind `rope`: the program's RoPE tables and the in-place (inverse) RoPE of the output.

Kernels: kernels_triton/rope/ (tables.py, naive.py, kernel.py, cost.py, ir.py). A program builds
its cos/sin tables once, as buffers it plans, and every rotation reads rows of them: the
compressors' rows at position i*m, the attention output's rows at the query positions.
"""
from __future__ import annotations

from typing import Dict

from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.rope import cost, ir, kernel, naive, tables

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

INVERSE = Op(
    "rope.inverse",
    "in place: (inverse) RoPE of the rows' last dims, row n at table row pos0 + n",
    writes=("x",),
    updates=("x",),
    impls={
        "torch": Impl(naive.rope_, "torch rope", sized(cost.naive_temp_bytes, "rows", "heads", "dim_v", "rot_dim")),
        "interpret": Impl(kernel.apply_rope_, "triton _rope_kernel [interpreter]"),
        "cuda": Impl(kernel.apply_rope_, "triton _rope_kernel (in place)"),
    },
)


def _emit(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    a = pipe.attention
    if a.inverse_rope is None:
        return {"": f"// pipeline {pipe.name!r} has no inverse RoPE epilogue: no kernel\n"}
    return {"": ir.compile_ir(heads=a.heads, v_dim=a.v_dim, rope_dim=a.inverse_rope.dim, arch=arch)[level]}


KIND = StageKind(
    kind="rope",
    spec_type=RoPE,
    doc="RoPE tables of a program, and the in-place inverse RoPE of the attention output",
    ops={"tables": TABLES, "inverse": INVERSE},
    inputs=lambda pipe, stage, role: {},
    ir=(IRSection("rope", "triton", "inverse RoPE epilogue on the output's last dims, in place",
                  TRITON_LEVELS, _emit),),
)
