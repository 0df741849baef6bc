"""HCA key lists in plain PyTorch: the reference of kernel.py (docs/semantics.md section 6)."""
from __future__ import annotations

from typing import Optional

import torch

from ..indexer.naive import row_ranges, window_ids


def keys_chunk(out: torch.Tensor, *, s_first: int, ratio: int, rows: int, idx_offset: int, window: int,
               seg: Optional[torch.Tensor] = None) -> None:
    """out[i] (query s = s_first + i) = [window ids | rows 0 .. (s+1)//ratio - 1 + idx_offset, -1 padded]:
    out [n, window + rows] int32. `seg`: a packed batch's segment rows of the queries (each query's own
    sequence: its window, its rows from row0; packed ids)."""
    n = out.shape[0]
    pos, tok0, lo, hi = row_ranges(n, s_first, ratio, seg, out.device)
    if window:
        out[:, :window].copy_(window_ids(pos, tok0, window))
    t = torch.arange(rows, device=out.device)[None, :]
    vis = t < (hi - lo)[:, None]
    ids = t + lo[:, None] + idx_offset
    out[:, window:window + rows].copy_(torch.where(vis, ids, torch.full_like(ids, -1)).to(torch.int32))
