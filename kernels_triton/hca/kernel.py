"""HCA key lists in Triton: per query, the window ids, then every visible compressed row.

An HCA layer (m = 128) has no indexer: the query at position s attends its window and every
compressed row t < (s + 1) // m (docs/semantics.md section 6). One program per query writes its
list; the visible rows come first and the rest is -1, so the attention kernel's causal bound
(window + (s + 1) // m valid slots) skips the invisible blocks instead of walking them.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._window import store_window, window_pow2
from ..varlen.kernel import load_token_segments, segments_arg

ROW_BLOCK = 1024      # rows written per loop step
KEYS_WARPS = 4


@triton.jit
def _keys_kernel(out_ptr, seg_ptr, s_first, rows, idx_offset, stride_o,
                 RATIO: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, BLOCK: tl.constexpr,
                 VARLEN: tl.constexpr):
    r = tl.program_id(0)
    orow = out_ptr + r.to(tl.int64) * stride_o
    if VARLEN:      # a packed batch: the position in its own sequence, whose tokens / rows start at tok0 / row0
        s, tok0, row0 = load_token_segments(seg_ptr, r, r >= 0)
        idx_offset += row0
    else:
        s = s_first + r                     # the query's position
        tok0 = 0
    if W > 0:
        store_window(orow, s, tok0, W, WP)
        orow += W
    L = tl.minimum((s + 1) // RATIO, rows)  # the rows it sees
    offs = tl.arange(0, BLOCK)
    for b0 in range(0, rows, BLOCK):
        t = b0 + offs
        tl.store(orow + t, tl.where(t < L, t + idx_offset, -1), mask=t < rows)


def keys_chunk(out: torch.Tensor, *, s_first: int, ratio: int, rows: int, idx_offset: int, window: int,
               seg: Optional[torch.Tensor] = None) -> None:
    """out[i] (query s = s_first + i) = [window ids | rows 0 .. (s+1)//ratio - 1 + idx_offset, -1 padded];
    out [n, >= window + rows] int32, row stride free (a slice of a wider buffer). `seg` (a packed batch:
    the queries' segment rows, varlen/naive.py): positions, window and rows are each query's own
    sequence's, the ids packed."""
    n = out.shape[0]
    if n == 0:
        return
    if out.dtype != torch.int32 or out.shape[1] < window + rows or out.stride(1) != 1:
        raise ValueError(f"out must be int32 [n, >= {window + rows}] with unit column stride, got "
                         f"{out.dtype} {tuple(out.shape)}")
    _keys_kernel[(n,)](out, segments_arg(seg, n, out), s_first, rows, idx_offset, out.stride(0), RATIO=ratio,
                       W=window, WP=window_pow2(window), BLOCK=ROW_BLOCK, VARLEN=seg is not None,
                       num_warps=KEYS_WARPS)
