"""The segment tables (naive.py) as the Triton kernels read them."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import ROW_COLS, SEG_COLS

__all__ = ["ROW_COLS", "SEG_COLS", "check_segments", "column_base", "load_row_segments", "load_token_segments"]

_SEG_COLS = tl.constexpr(SEG_COLS)      # jit code reads module constants only as constexprs
_ROW_COLS = tl.constexpr(ROW_COLS)


@triton.jit
def load_token_segments(seg_ptr, rows, ok):
    """(pos, tok0, row0) int32 of the packed tokens `rows` (a vector or a scalar) from tok_seg; 0 where
    not `ok`."""
    base = seg_ptr + rows.to(tl.int64) * _SEG_COLS
    pos = tl.load(base, mask=ok, other=0)
    tok0 = tl.load(base + 1, mask=ok, other=0)
    row0 = tl.load(base + 2, mask=ok, other=0)
    return pos, tok0, row0


@triton.jit
def column_base(seg_ptr):
    """The chunk's first score column: the first compressed row its first query's sequence owns (row0 of
    segment row 0). A packed chunk's scores are stored from there (naive.column_base says why it fits)."""
    return tl.load(seg_ptr + 2)


@triton.jit
def load_row_segments(row_seg_ptr, rows, ok):
    """(tok0, i) int32 of the packed compressed rows `rows` from row_seg; i = -1 where not `ok` or unowned."""
    base = row_seg_ptr + rows.to(tl.int64) * _ROW_COLS
    tok0 = tl.load(base, mask=ok, other=0)
    i = tl.load(base + 1, mask=ok, other=-1)
    return tok0, i


def check_segments(seg: torch.Tensor, rows: int, device, cols: int = SEG_COLS, what: str = "seg") -> None:
    """A kernel's segment rows: int32 [rows, cols] with packed rows (the tables' own layout), on `device`."""
    if not isinstance(seg, torch.Tensor) or seg.dtype != torch.int32 or seg.dim() != 2:
        raise ValueError(f"{what} must be an int32 [{rows}, {cols}] segment table (kernels_triton.varlen), got "
                         f"{seg.dtype if isinstance(seg, torch.Tensor) else type(seg).__name__}")
    if tuple(seg.shape) != (rows, cols) or (rows and seg.stride() != (cols, 1)):
        raise ValueError(f"{what} must be [{rows}, {cols}] with packed rows (a row slice of the table), got "
                         f"shape {tuple(seg.shape)}, strides {tuple(seg.stride())}")
    if seg.device != torch.device(device) and seg.device.type != torch.device(device).type:
        raise ValueError(f"{what} is on {seg.device} but the kernel's tensors are on {device}")
