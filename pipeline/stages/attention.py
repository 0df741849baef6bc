"""Stage kind `attention`: sparse MLA attention over each query's key list, then (V4) the inverse
RoPE of the output's last dims.

Kernels: kernels_tilelang/sparse_mla/ (naive.py, kernel.py, cost.py, ir.py) and the in-place
RoPE of kernels_triton/rope/.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_tilelang.sparse_mla import cost, kernel, naive
from kernels_tilelang.sparse_mla import ir as tl_ir
from kernels_triton._compile import LEVELS as TRITON_LEVELS
from kernels_triton.rope import cost as rope_cost
from kernels_triton.rope import ir as rope_ir
from kernels_triton.rope import kernel as rope_kernel
from kernels_triton.rope import naive as rope_naive

from ..lang.errors import SpecError
from ..lang.spec import Pipeline, SparseAttention
from .base import Impl, InputDef, IRSection, Op, StageKind

TILELANG_LEVELS = ("tir", "cuda")


def _attend_naive_temp(rows: int = 0, heads: int = 0, dim_qk: int = 0, dim_v: int = 0, keys: int = 0, **_) -> int:
    return cost.naive_temp_bytes(rows, heads, dim_qk, dim_v, keys)


def _attend_kernel_temp(rows: int = 0, heads: int = 0, dim_qk: int = 0, dim_v: int = 0, keys: int = 0, **_) -> int:
    return cost.kernel_temp_bytes(rows, heads, dim_qk, dim_v, keys)


def _rope_naive_temp(rows: int = 0, heads: int = 0, dim_v: int = 0, rot_dim: int = 0, **_) -> int:
    return rope_cost.naive_temp_bytes(rows, heads, dim_v, rot_dim)


ATTEND = Op(
    "attention.attend",
    "out [n, H, Dv] <- softmax attention of q over the rows its key list names (sink in the denominator)",
    writes=("out",),
    impls={
        "torch": Impl(naive.attend, "torch gather + softmax", _attend_naive_temp),
        # TileLang has no CPU runtime: the interpreter backend runs the reference attention
        "interpret": Impl(naive.attend, "torch gather + softmax", _attend_naive_temp),
        "cuda": Impl(kernel.attend, "tilelang sparse_mla_fwd (warp-specialised)", _attend_kernel_temp),
    },
)

INVERSE_ROPE = Op(
    "attention.inverse_rope",
    "in place: inverse RoPE of the output's last dims at the query positions",
    writes=("x",),
    updates=("x",),
    impls={
        "torch": Impl(rope_naive.rope_, "torch rope", _rope_naive_temp),
        "interpret": Impl(rope_kernel.apply_rope_, "triton _rope_kernel [interpreter]"),
        "cuda": Impl(rope_kernel.apply_rope_, "triton _rope_kernel (in place)"),
    },
)


def _inputs(pipe: Pipeline, a: SparseAttention, role: str) -> Dict[str, InputDef]:
    out = {
        "q": InputDef(lambda B, S: (B, S, a.heads, a.qk_dim), torch.bfloat16, True, "attention queries"),
        "kv": InputDef(lambda B, S: (B, S, a.qk_dim), torch.bfloat16, True, "latent KV rows"),
    }
    if a.sink:
        out["sink"] = InputDef(lambda B, S: (a.heads,), torch.float32, False, "per-head sink logit")
    return out


def _limits(a: SparseAttention, backend: str) -> Optional[str]:
    if backend != "cuda":
        return None
    return kernel.kernel_limits(a.heads, a.qk_dim, a.v_dim)


def _emit_attention(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    a = pipe.attention
    try:
        res = tl_ir.lower_sparse_mla_fwd(a.heads, a.qk_dim, a.v_dim, a.window + pipe.indexer.topk, a.sink,
                                         arch=f"sm_{arch}a" if arch == 90 else f"sm_{arch}")
    except ValueError as e:  # an arch other than sm_90a
        raise SpecError(f"attention kernel: {e}") from None
    return {"": res[level]}


def _emit_rope(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    a = pipe.attention
    if a.inverse_rope is None:
        return {"": f"// pipeline {pipe.name!r} has no inverse RoPE epilogue: no kernel\n"}
    return {"": rope_ir.compile_ir(heads=a.heads, v_dim=a.v_dim, rope_dim=a.inverse_rope.dim, arch=arch)[level]}


KIND = StageKind(
    kind="attention",
    spec_type=SparseAttention,
    doc="sparse MLA attention over window + selected rows, sink in the denominator; inverse RoPE epilogue",
    ops={"attend": ATTEND, "inverse_rope": INVERSE_ROPE},
    inputs=_inputs,
    limits=_limits,
    ir=(IRSection("attention", "tilelang", "sparse MLA forward, warp-specialised producer/consumer pipeline",
                  TILELANG_LEVELS, _emit_attention),
        IRSection("rope", "triton", "inverse RoPE epilogue on the output's last dims, in place",
                  TRITON_LEVELS, _emit_rope)),
)
