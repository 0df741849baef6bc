"""The segment tables (naive.py) as the Triton kernels read them, and the kernel that builds them."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import ROW_COLS, SEG_COLS

__all__ = ["ROW_COLS", "SEG_COLS", "check_segments", "load_row_segments", "load_token_segments",
           "segments", "segments_arg", "visible_tiles", "warp_uniform"]

SEGMENT_BLOCK = 1024    # tokens (or rows) per program of the table kernel

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
def visible_tiles(seg_ptr, s_first, q0, offs, q_ok, n_q, T, RATIO: tl.constexpr, BQ: tl.constexpr,
                  BT: tl.constexpr, VARLEN: tl.constexpr):
    """What a block of score queries q0 + offs (valid where q_ok) sees: (lo, nvis, t_start, t_end).
    Query i sees compressed rows [lo_i, nvis_i); the block walks key tiles [t_start, t_end) in steps of BT.
    Unpacked: positions s_first + q0 + offs, lo = t_start = 0; query i stores row t at column t.
    Packed (VARLEN): each query's own sequence's rows [row0, row0 + (pos+1)//m) (naive.py), tiles from
    the block's first row0 (rounded down to a tile) to its most-seeing query's end; query i stores row t
    at column t - lo_i (its own sequence's rows from column 0)."""
    lo = 0
    t_start = 0
    if VARLEN:
        pos, tok0, row0 = load_token_segments(seg_ptr, q0 + offs, q_ok)
        lo = tl.where(q_ok, row0, T)
        nvis = tl.where(q_ok, row0 + (pos + 1) // RATIO, 0)
        t_start = (tl.min(lo, axis=0) // BT) * BT
        t_end = tl.max(nvis, axis=0)
    else:
        pos = s_first + q0 + offs                       # global positions of the block's queries
        nvis = tl.where(q_ok, (pos + 1) // RATIO, 0)
        # rows the last (most-seeing) query sees, written without "last + 1" so that Triton can prove t_end a
        # multiple of 4 when s_first and n_q are of 16 (then the score stores go out 16 bytes at a time; with
        # (s_first + last + 1) // RATIO the self-index kernel's were 4-byte stores and it ran 0.76 against 0.60 ms)
        t_end = (s_first + tl.minimum(q0 + BQ, n_q)) // RATIO
    return lo, nvis, t_start, t_end


@triton.jit
def warp_uniform(x, EMULATE: tl.constexpr):
    """x, an int32 scalar that every thread of the warp already holds (a block reduction, a value loaded from
    one address), marked warp-uniform for ptxas: redux.sync.min writes a uniform register. A loop bounded by a
    value ptxas takes for per-thread (a packed block's key tiles, from loaded segment rows) has a divergent
    exit for it, so everything the loop carries lives in per-thread registers: the FP8 score walk then moved
    its wgmma descriptors to uniform registers by 15 R2UR a tile and spilled under its register cap
    (docs/performance.md). The interpreter, which runs no PTX, takes x as it is."""
    if EMULATE:
        return x
    else:
        return tl.inline_asm_elementwise("redux.sync.min.s32 $0, $1, 0xffffffff;", "=r,r", [x], dtype=tl.int32,
                                         is_pure=True, pack=1)


@triton.jit
def load_row_segments(row_seg_ptr, rows, ok):
    """(tok0, i) int32 of the packed compressed rows `rows` from row_seg; i = -1 where not `ok` or unowned."""
    base = row_seg_ptr + rows.to(tl.int64) * _ROW_COLS
    tok0 = tl.load(base, mask=ok, other=0)
    i = tl.load(base + 1, mask=ok, other=-1)
    return tok0, i


def segments_arg(seg, rows: int, placeholder: torch.Tensor, cols: int = SEG_COLS, what: str = "seg") -> torch.Tensor:
    """The segment pointer a launcher passes: `seg` checked (check_segments), or, unpacked (seg None:
    VARLEN off, the pointer never read), any tensor of the launch."""
    if seg is None:
        return placeholder
    check_segments(seg, rows, placeholder.device, cols, what)
    return seg


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


@triton.jit
def _owner(cu_ptr, x, n, STEPS: tl.constexpr):
    """The largest j < n with cu[j] <= x (cu [n + 1] non-decreasing, cu[0] = 0 <= x): the sequence holding
    x when x < cu[n] (an empty sequence never does: the next one has the same start). Binary search,
    STEPS >= log2(n) halvings; every probe is inside cu."""
    lo = tl.zeros_like(x)
    hi = tl.zeros_like(x) + n           # invariant: cu[lo] <= x and the answer is < hi
    for _ in range(STEPS):
        mid = (lo + hi) // 2
        active = hi - lo > 1
        below = tl.load(cu_ptr + mid) <= x
        lo = tl.where(active & below, mid, lo)
        hi = tl.where(active & ~below, mid, hi)
    return lo


@triton.jit
def _segments_kernel(cu_ptr, cur_ptr, tok_ptr, row_ptr, n, N, R, RATIO: tl.constexpr, STEPS: tl.constexpr,
                     BLOCK: tl.constexpr, ROWS: tl.constexpr):
    # programs [0, cdiv(N, BLOCK)) fill tok_seg, the next ones row_seg (ROWS: there is one)
    pid = tl.program_id(0)
    n_tok_programs = tl.cdiv(N, BLOCK)
    if pid < n_tok_programs:
        t = pid * BLOCK + tl.arange(0, BLOCK)
        ok = t < N
        j = _owner(cu_ptr, t, n, STEPS)
        tok0 = tl.load(cu_ptr + j, mask=ok, other=0)
        length = tl.load(cu_ptr + j + 1, mask=ok, other=0) - tok0
        row0 = tl.load(cur_ptr + j, mask=ok, other=0)
        base = tok_ptr + t.to(tl.int64) * _SEG_COLS
        tl.store(base, t - tok0, mask=ok)
        tl.store(base + 1, tok0, mask=ok)
        tl.store(base + 2, row0, mask=ok)
        tl.store(base + 3, length, mask=ok)
    elif ROWS:
        r = (pid - n_tok_programs) * BLOCK + tl.arange(0, BLOCK)
        ok = r < R
        owned = r < tl.load(cur_ptr + n)    # rows past the last sequence's belong to none
        j = _owner(cur_ptr, r, n, STEPS)
        base = row_ptr + r.to(tl.int64) * _ROW_COLS
        tl.store(base, tl.where(owned, tl.load(cu_ptr + j, mask=ok, other=0), 0), mask=ok)
        tl.store(base + 1, tl.where(owned, r - tl.load(cur_ptr + j, mask=ok, other=0), -1), mask=ok)


def segments(cu_seqlens: torch.Tensor, tok_seg: torch.Tensor, row_seg=None, *, ratio: int) -> None:
    """naive.segments in one launch (after a cumsum over the n sequences): the same tables."""
    N, n = tok_seg.shape[0], cu_seqlens.shape[0] - 1
    check_segments(tok_seg, N, tok_seg.device, what="tok_seg")
    if row_seg is not None:
        check_segments(row_seg, row_seg.shape[0], tok_seg.device, ROW_COLS, "row_seg")
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    per_seq = lens // ratio if ratio > 0 else torch.zeros_like(lens)
    cu_rows = torch.cat([per_seq.new_zeros(1), per_seq.cumsum(0).to(torch.int32)])
    R = row_seg.shape[0] if row_seg is not None else 0
    grid = (triton.cdiv(N, SEGMENT_BLOCK) + triton.cdiv(R, SEGMENT_BLOCK),)
    _segments_kernel[grid](cu_seqlens, cu_rows, tok_seg, row_seg if row_seg is not None else tok_seg, n, N, R,
                           RATIO=ratio, STEPS=max(1, n.bit_length()), BLOCK=SEGMENT_BLOCK, ROWS=row_seg is not None)
