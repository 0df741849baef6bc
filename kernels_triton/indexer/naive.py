"""The lightning indexer and its top-k in plain PyTorch (fp32 math): the reference of kernel.py.

docs/semantics.md sections 2, 3 and 9. `score_chunk` and `select_chunk` have the kernel
launchers' signatures, so a program runs on either; the score here materialises the
[n, HI, T] fp32 einsum of the chunk (the cost model counts it).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..quant.naive import dequant_keys, quant_dequant

INT32_MIN = -(2 ** 31)


def visible_rows(positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """How many compressed rows each query position sees: (s + 1) // m (t <= s for m = 1)."""
    return (positions + 1) // ratio


def indexer_scores(idx_q: torch.Tensor, idx_w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """score[b,s,t] = sum_h w[b,s,h] * ReLU(q[b,s,h,:] . k[b,t,:]), fp32, unmasked. [B, s, T]. NaN propagates."""
    logits = torch.einsum("bshd,btd->bsht", idx_q.float(), k.float())
    return (logits.relu_() * idx_w.float().unsqueeze(-1)).sum(dim=2)


def mask_invisible(scores: torch.Tensor, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    T = scores.shape[-1]
    vis = torch.arange(T, device=scores.device)[None, :] < visible_rows(positions, ratio)[:, None]
    return scores.masked_fill(~vis, float("-inf"))


def order_key(scores: torch.Tensor) -> torch.Tensor:
    """fp32 -> int32 keys whose signed order is the float order, -0.0 folded onto +0.0, and NaN
    mapped below every number (semantics section 9). The Triton selection uses the same keys
    (kernel._order_key; there NaN is INT32_MIN, here INT32_MIN + 1 so that an invisible row can
    rank lower still: among visible rows the order is the same)."""
    x = scores.float() + 0.0
    b = x.view(torch.int32)
    key = torch.where(b >= 0, b, b ^ 0x7FFFFFFF)
    return torch.where(torch.isnan(x), torch.full_like(key, INT32_MIN + 1), key)


def topk_select(scores: torch.Tensor, positions: torch.Tensor, ratio: int, topk: int) -> torch.Tensor:
    """Top-K_eff visible rows per query, ties to the smaller index, NaN below every number, -1 padded.
    int32 [B, s, K_eff].

    Each score becomes one int64 key (order key << 32 | (2^32 - 1 - index)): keys are distinct, so
    torch.topk picks exactly the K largest with ties to the smaller index, and an invisible row
    (key INT32_MIN, below NaN's) is chosen only when fewer than K_eff rows are visible; it is then -1."""
    T = scores.shape[-1]
    k_eff = min(topk, T)
    nvis = visible_rows(positions, ratio).to(scores.device)
    visible = torch.arange(T, device=scores.device)[None, :] < nvis[:, None]
    key = torch.where(visible, order_key(scores), torch.full(scores.shape, INT32_MIN, dtype=torch.int32,
                                                             device=scores.device))
    low = (2 ** 32 - 1) - torch.arange(T, device=scores.device, dtype=torch.int64)
    packed = (key.to(torch.int64) << 32) | low
    order = (2 ** 32 - 1) - (packed.topk(k_eff, dim=-1).values & 0xFFFFFFFF)
    sel = torch.where(order < nvis[None, :, None], order, torch.full_like(order, -1))
    return sel.to(torch.int32)


def window_indices(positions: torch.Tensor, window: int) -> torch.Tensor:
    """[len(positions), W] int32: max(0, s-W+1) .. s in order, -1 padded at the end for s < W-1."""
    s = positions[:, None]
    idx = (s - window + 1).clamp(min=0) + torch.arange(window, device=positions.device)[None, :]
    return torch.where(idx > s, torch.full_like(idx, -1), idx).to(torch.int32)


# ---------------------------------------------------------------------------------------
# the ops, with the kernel launchers' signatures
def score_chunk(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, out: torch.Tensor, *, s_first: int,
                ratio: int) -> None:
    """out[:n, :T] = the masked scores of queries [s_first, s_first + n) (q [n,HI,DI], w [n,HI], k [T,DI])."""
    n, T = q.shape[0], k.shape[0]
    pos = torch.arange(s_first, s_first + n, device=q.device)
    out[:n, :T] = mask_invisible(indexer_scores(q[None], w[None], k[None])[0], pos, ratio)


def score_chunk_fp8(q: torch.Tensor, w: torch.Tensor, k8: torch.Tensor, k_scale: torch.Tensor, out: torch.Tensor,
                    *, s_first: int, ratio: int, q_format: str, q_block: int) -> None:
    """score_chunk on the quantised operands: q quantise-dequantised (q_format, blocks of q_block), the keys
    k8 * k_scale (quant.naive.pack_keys); fp32 math as score_chunk."""
    score_chunk(quant_dequant(q, q_format, q_block).float(), w, dequant_keys(k8, k_scale), out, s_first=s_first,
                ratio=ratio)


def select_chunk(scores: Optional[torch.Tensor], out: torch.Tensor, cand: Optional[torch.Tensor] = None, *,
                 s_first: int, ratio: int, k_eff: int, topk: int, idx_offset: int = 0, window: int = 0) -> None:
    """out[:, :window] = window ids, out[:, window:] = the selected rows + idx_offset (-1 padded)."""
    n = out.shape[0]
    pos = torch.arange(s_first, s_first + n, device=out.device)
    if window:
        out[:, :window].copy_(window_indices(pos, window))
    if k_eff:
        T = min((s_first + n) // ratio, scores.shape[1])      # the rows the chunk's last query sees
        sel = topk_select(scores[None, :n, :T], pos, ratio, topk)[0]
        if sel.shape[1] < k_eff:     # the chunk sees fewer rows than the whole sequence: pad
            sel = torch.cat([sel, sel.new_full((n, k_eff - sel.shape[1]), -1)], dim=1)
        out[:, window:window + k_eff].copy_(torch.where(sel >= 0, sel + idx_offset, sel))
