"""HCA key lists in plain PyTorch: the reference of kernel.py (docs/semantics.md section 6)."""
from __future__ import annotations

import torch

from ..indexer.naive import visible_rows, window_indices


def keys_chunk(out: torch.Tensor, *, s_first: int, ratio: int, rows: int, idx_offset: int, window: int) -> None:
    """out[i] (query s = s_first + i) = [window ids | rows 0 .. (s+1)//ratio - 1 + idx_offset, -1 padded]:
    out [n, window + rows] int32."""
    n = out.shape[0]
    pos = torch.arange(s_first, s_first + n, device=out.device)
    if window:
        out[:, :window].copy_(window_indices(pos, window))
    t = torch.arange(rows, device=out.device)[None, :]
    vis = t < visible_rows(pos, ratio)[:, None]
    out[:, window:window + rows].copy_(torch.where(vis, t + idx_offset, torch.full_like(t, -1)).to(torch.int32))
