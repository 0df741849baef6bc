"""Segment tables of a packed batch, and the key-list renumbering, in plain PyTorch.

A packed batch holds n sequences along one token axis: sequence i is tokens [cu[i], cu[i+1]).
Every stage keeps the sequences apart through two tables built once per forward:

    tok_seg [N, 4] int32, per token:   (pos, tok0, row0, len)
        pos   its position inside its own sequence (what a B = 1 run of that sequence calls s)
        tok0  the packed index of its sequence's first token
        row0  the packed index of its sequence's first compressed row (compressed rows are packed
              the same way: sequence i owns rows [cuT[i], cuT[i+1]), T_i = len_i // m)
        len   its sequence's length
    row_seg [R, 2] int32, per compressed row (R = N // m, a bound on sum_i T_i):  (tok0, i)
        tok0  the packed index of its sequence's first token
        i     the row's index inside its sequence (block i pools tokens m*i - m .. m*i + m - 1 of
              that sequence); -1 for the rows past sum_i T_i, which no sequence owns

A query at (pos, row0) sees compressed rows [row0, row0 + (pos + 1) // m) and window tokens
[tok0 + max(0, pos - W + 1), tok0 + pos]. Everything here is tensor ops on the tables' device
(searchsorted, cumsum): no host synchronisation, so it runs inside a CUDA graph.
"""
from __future__ import annotations

from typing import Optional

import torch

SEG_POS, SEG_TOK0, SEG_ROW0, SEG_LEN = 0, 1, 2, 3
SEG_COLS = 4
ROW_TOK0, ROW_INDEX = 0, 1
ROW_COLS = 2


def segments(cu_seqlens: torch.Tensor, tok_seg: torch.Tensor, row_seg: Optional[torch.Tensor] = None, *,
             ratio: int) -> None:
    """Fill tok_seg [N, 4] (and row_seg [R, 2] when given) from cu_seqlens [n + 1] (see the module doc).
    ratio: the compression ratio m (0: no compressed rows; then row0 = 0)."""
    dev = tok_seg.device
    cu = cu_seqlens.to(device=dev, dtype=torch.int64)
    n = cu.shape[0] - 1
    N = tok_seg.shape[0]
    tok = torch.arange(N, device=dev, dtype=torch.int64)
    seq = torch.searchsorted(cu[1:], tok, right=True).clamp_(max=max(n - 1, 0))  # cu[seq] <= tok < cu[seq + 1]
    lens = cu[1:] - cu[:-1]
    per_seq = lens // ratio if ratio > 0 else torch.zeros_like(lens)
    cu_rows = torch.cat([per_seq.new_zeros(1), per_seq.cumsum(0)])
    tok0 = cu[seq]
    tok_seg.copy_(torch.stack([tok - tok0, tok0, cu_rows[seq], lens[seq]], dim=1).to(torch.int32))
    if row_seg is not None:
        r = torch.arange(row_seg.shape[0], device=dev, dtype=torch.int64)
        rseq = torch.searchsorted(cu_rows[1:], r, right=True)
        owned = rseq < n
        rseq = rseq.clamp_(max=max(n - 1, 0))
        row_seg.copy_(torch.stack([torch.where(owned, cu[rseq], 0),
                                   torch.where(owned, r - cu_rows[rseq], -1)], dim=1).to(torch.int32))


def score_columns(rows: int, max_seqlen: int, ratio: int) -> int:
    """Score columns a packed chunk needs: each query's row holds its own sequence's visible rows from
    column 0 (its row0), at most max_seqlen // m of them; never more than the rows."""
    return max(1, min(rows, max_seqlen // max(ratio, 1)))


def query_ranges(seg: torch.Tensor, ratio: int):
    """(pos, tok0, lo, hi) int64 of queries with segment rows `seg` [n, 4]: the compressed rows each sees
    are [lo, hi) (ratio 0: none)."""
    s = seg.long()
    pos, tok0, row0 = s[:, SEG_POS], s[:, SEG_TOK0], s[:, SEG_ROW0]
    hi = row0 + ((pos + 1) // ratio if ratio > 0 else 0)
    return pos, tok0, row0, hi


def local_ids(ids: torch.Tensor, tok_seg: torch.Tensor, *, window: int, sel_offset: int,
              compressed: bool) -> None:
    """In place on key lists ids [N, W + K] int32 written in packed numbering (window ids = packed token
    indices, selected ids = packed compressed row + sel_offset): renumber each row as a B = 1 run of its
    own sequence numbers it (window ids from 0, selected ids = row inside the sequence + its length when
    the layer has compressed rows, else + 0). -1 stays -1."""
    s = tok_seg.long()
    tok0, row0, length = s[:, SEG_TOK0:SEG_TOK0 + 1], s[:, SEG_ROW0:SEG_ROW0 + 1], s[:, SEG_LEN:SEG_LEN + 1]
    x = ids.long()
    win, sel = x[:, :window], x[:, window:]
    local_sel = sel - sel_offset - row0 + (length if compressed else 0)
    ids[:, :window] = torch.where(win >= 0, win - tok0, -1).to(torch.int32)
    ids[:, window:] = torch.where(sel >= 0, local_sel, -1).to(torch.int32)
