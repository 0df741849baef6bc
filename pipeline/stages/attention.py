"""Stage kind `attention`: sparse MLA attention over each query's key list.

Kernels: kernels_tilelang/sparse_mla/ (naive.py, kernel.py, cost.py, ir.py). The inverse RoPE
of the output (V4) is the `rope` stage's.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_tilelang.sparse_mla import cost, kernel, naive
from kernels_tilelang.sparse_mla import ir as tl_ir

from ..lang import defaults
from ..lang.errors import SpecError
from ..lang.spec import Pipeline, SparseAttention
from .base import Impl, InputDef, IRSection, Op, StageKind, sized

TILELANG_LEVELS = ("tir", "cuda")
SIZES = ("rows", "heads", "dim_qk", "dim_v", "keys")
NAIVE_TEMP = sized(cost.naive_temp_bytes, *SIZES)


ATTEND = Op(
    "attention.attend",
    "out [n, H, Dv] <- softmax attention of q over the rows its key list names (sink in the denominator); "
    "no list: the window alone; past a causal bound no key block is walked",
    writes=("out",),
    impls={
        "torch": Impl(naive.attend, "torch gather + softmax", NAIVE_TEMP),
        # TileLang has no CPU runtime: the interpreter backend runs the reference attention
        "interpret": Impl(naive.attend, "torch gather + softmax", NAIVE_TEMP),
        "cuda": Impl(kernel.attend, "tilelang sparse_mla_fwd (warp-specialised: seesaw split)",
                     sized(cost.kernel_temp_bytes, *SIZES)),
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


def _limits(pipe: Pipeline, a: SparseAttention, backend: str) -> Optional[str]:
    if backend != "cuda":
        return None
    return kernel.kernel_limits(a.heads, a.qk_dim, a.v_dim)


def ir_key_list(pipe: Pipeline):
    """(key-list width, kernel variant) the IR shows: the indexer's W + topk, HCA's W + T at the GPU's
    default S (the width grows with S; the causal bound keeps the work to the visible rows), or the
    implicit window of a window-only layer; the variant's family is the kernel's default for the rows
    (seesaw)."""
    family = kernel.DEFAULT_VARIANT
    if pipe.layer == "window":
        a = pipe.attention
        return a.window, "seesaw-ring" if kernel.ring_window(a.qk_dim, a.window) else f"{family}-window"
    if pipe.layer == "hca":
        width = pipe.index_width(defaults.GPU_SEQ_LEN)
        short = family == "seesaw" and kernel.padded_num_indices(width) < kernel.SEESAW_BOUNDED_MIN_NI
        return width, family if short else f"{family}-bounded"      # as sparse_mla_fwd picks it
    return pipe.attention.window + pipe.indexer.topk, family


def implicit_window(a: SparseAttention, impl: str, packed: bool) -> bool:
    """Whether a window-only layer's attention computes its windows itself, with no key list: always unpacked;
    a packed batch's (from the segment rows) on the reference attention, and on the GPU where the ring kernel
    runs the window (kernel.ring_window: V4's 512-dim rows, 128-row window)."""
    return not packed or impl != "cuda" or kernel.ring_window(a.qk_dim, a.window)


def fused_rope(a: SparseAttention) -> tuple:
    """The (col0, rot_dim, seg) of the inverse RoPE the kernel fuses for this attention (unpacked rows)."""
    rd = a.inverse_rope.dim if a.inverse_rope is not None else 0
    return (a.v_dim - rd, rd, False) if kernel.rope_fusable(a.v_dim, rd) else kernel.NO_ROPE


def _emit_attention(pipe: Pipeline, level: str, arch: int) -> Dict[str, str]:
    a = pipe.attention
    width, variant = ir_key_list(pipe)
    try:
        res = tl_ir.lower_sparse_mla_fwd(a.heads, a.qk_dim, a.v_dim, width, a.sink, variant=variant,
                                         arch=f"sm_{arch}a" if arch == 90 else f"sm_{arch}", rope=fused_rope(a))
    except ValueError as e:  # an arch other than sm_90a
        raise SpecError(f"attention kernel: {e}") from None
    return {"": res[level]}


KIND = StageKind(
    kind="attention",
    spec_type=SparseAttention,
    doc="sparse MLA attention over window + selected rows, sink in the denominator",
    ops={"attend": ATTEND},
    inputs=_inputs,
    limits=_limits,
    ir=(IRSection("attention", "tilelang", "sparse MLA forward, warp-specialised producer/consumer pipeline "
                  "(seesaw split), inverse RoPE in its epilogue",
                  TILELANG_LEVELS, _emit_attention),),
)
