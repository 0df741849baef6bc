"""The lightning indexer and its top-k in plain PyTorch (fp32 math): the reference of kernel.py.

docs/semantics.md sections 2, 3 and 9. `score_chunk` and `select_chunk` have the kernel
launchers' signatures, so a program runs on either; the score here materialises the
[n, HI, T] fp32 einsum of the chunk (the cost model counts it).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..quant.naive import dequant_rows
from ..varlen.naive import query_ranges

INT32_MIN = -(2 ** 31)


def visible_rows(positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """How many compressed rows each query position sees: (s + 1) // m (t <= s for m = 1)."""
    return (positions + 1) // ratio


def indexer_scores(idx_q: torch.Tensor, idx_w: torch.Tensor, k: torch.Tensor, round_bf16: bool = False) -> torch.Tensor:
    """score[b,s,t] = sum_h w[b,s,h] * ReLU(q[b,s,h,:] . k[b,t,:]), fp32, unmasked. [B, s, T]. NaN propagates.
    `round_bf16` (Indexer.score_rounding "bf16", the official code's score): each head's dot (fp32 sum) rounded
    to bf16, ReLU, times the head weight rounded to bf16 (the product rounded to bf16), the head sum (fp32)
    rounded to bf16; every rounding to nearest even, the result kept as fp32."""
    logits = torch.einsum("bshd,btd->bsht", idx_q.float(), k.float())
    if not round_bf16:
        return (logits.relu_() * idx_w.float().unsqueeze(-1)).sum(dim=2)
    terms = _to_bf16(_to_bf16(logits).relu_() * _to_bf16(idx_w.float()).unsqueeze(-1))
    return _to_bf16(terms.sum(dim=2))


def _to_bf16(x: torch.Tensor) -> torch.Tensor:
    """x (fp32) rounded to the nearest bf16 (ties to even; NaN and infinities kept), as fp32."""
    return x.to(torch.bfloat16).float()


def row_ranges(n: int, s_first: int, ratio: int, seg: Optional[torch.Tensor], device):
    """(pos, tok0, lo, hi) of queries [s_first, s_first + n): the compressed rows each sees are [lo, hi),
    its window tokens tok0 + (max(0, pos - W + 1) .. pos); with `seg` (a packed batch, varlen/naive.py)
    those of its own sequence."""
    if seg is not None:
        return query_ranges(seg, ratio)
    pos = torch.arange(s_first, s_first + n, device=device)
    return pos, torch.zeros_like(pos), torch.zeros_like(pos), visible_rows(pos, ratio)


def store_scores(out: torch.Tensor, scores: torch.Tensor, seg: Optional[torch.Tensor], lo: torch.Tensor,
                 hi: torch.Tensor) -> None:
    """out[:n, :T] = scores [n, T] (all rows' columns); a packed chunk (`seg`): row i holds its visible rows
    [lo_i, hi_i) from column 0 (-inf past them, as many columns as out holds), as the kernels store them."""
    n, T = scores.shape
    if seg is None:
        out[:n, :T] = scores
        return
    cols = lo[:, None] + torch.arange(out.shape[1], device=out.device)[None, :]
    vals = scores.gather(1, cols.clamp(max=T - 1))
    out[:n] = torch.where(cols < hi[:, None], vals, float("-inf"))


def visible(T: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[n, T] bool: row t is visible to query i iff lo[i] <= t < hi[i]."""
    t = torch.arange(T, device=lo.device)[None, :]
    return (t >= lo[:, None]) & (t < hi[:, None])


def mask_invisible(scores: torch.Tensor, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    vis = visible(scores.shape[-1], torch.zeros_like(positions), visible_rows(positions, ratio))
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
    nvis = visible_rows(positions, ratio).to(scores.device)
    return topk_in_ranges(scores, torch.zeros_like(nvis), nvis, topk)


def topk_in_ranges(scores: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, topk: int) -> torch.Tensor:
    """topk_select with the visible rows of query i given as [lo[i], hi[i]) (scores [B, s, T])."""
    T = scores.shape[-1]
    k_eff = min(topk, T)
    vis = visible(T, lo, hi)
    key = torch.where(vis, order_key(scores), torch.full(scores.shape, INT32_MIN, dtype=torch.int32,
                                                         device=scores.device))
    low = (2 ** 32 - 1) - torch.arange(T, device=scores.device, dtype=torch.int64)
    packed = (key.to(torch.int64) << 32) | low
    order = (2 ** 32 - 1) - (packed.topk(k_eff, dim=-1).values & 0xFFFFFFFF)
    ok = (order < hi[None, :, None]) & (order >= lo[None, :, None])
    return torch.where(ok, order, torch.full_like(order, -1)).to(torch.int32)


def window_ids(positions: torch.Tensor, tok0: torch.Tensor, window: int) -> torch.Tensor:
    """window_indices of each query's own sequence, numbered from its first token tok0 (0 unpacked)."""
    w = window_indices(positions, window)
    return torch.where(w >= 0, w + tok0[:, None].to(w.dtype), w)


def window_indices(positions: torch.Tensor, window: int) -> torch.Tensor:
    """[len(positions), W] int32: max(0, s-W+1) .. s in order, -1 padded at the end for s < W-1."""
    s = positions[:, None]
    idx = (s - window + 1).clamp(min=0) + torch.arange(window, device=positions.device)[None, :]
    return torch.where(idx > s, torch.full_like(idx, -1), idx).to(torch.int32)


# ---------------------------------------------------------------------------------------
# the ops, with the kernel launchers' signatures
def score_chunk(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, out: torch.Tensor, *, s_first: int,
                ratio: int, seg: Optional[torch.Tensor] = None, round_bf16: bool = False,
                gmax: Optional[torch.Tensor] = None) -> None:
    """out[:n, :T] = the masked scores of queries [s_first, s_first + n) (q [n,HI,DI], w [n,HI], k [T,DI]);
    `seg`: a packed batch's segment rows of the queries (each sees its own sequence's rows); `round_bf16`: the
    official code's bf16 score (indexer_scores). `gmax` [n, cap] (unpacked rows): also every row's
    group_maxima."""
    n, T = q.shape[0], k.shape[0]
    _, _, lo, hi = row_ranges(n, s_first, ratio, seg, q.device)
    sc = indexer_scores(q[None], w[None], k[None], round_bf16)[0]
    store_scores(out, sc.masked_fill(~visible(T, lo, hi), float("-inf")), seg, lo, hi)
    if gmax is not None:
        if seg is not None:
            raise ValueError("gmax is for unpacked rows only")
        gmax[:n].copy_(group_maxima(out[:n, :max(1, (s_first + n) // ratio)], s_first, ratio, gmax.shape[1]))


def group_maxima(scores: torch.Tensor, s_first: int, ratio: int, cap: int) -> torch.Tensor:
    """[n, cap]: the maximum of each row's visible scores in each of cap strided groups (column i joins group
    i % cap), NaN not counted (NaN when a group holds no number, e.g. when the row sees fewer than cap rows): the
    selection's pass 1 (kernel._select_kernel), which the Gluon score walk can keep for it (its `gmax`)."""
    n = scores.shape[0]
    L = (s_first + torch.arange(n, device=scores.device) + 1) // ratio
    cols = torch.arange(scores.shape[1], device=scores.device)
    x = torch.where(cols[None, :] < L[:, None], scores, float("nan"))
    x = torch.nn.functional.pad(x, (0, (-x.shape[1]) % cap), value=float("nan")).view(n, -1, cap)
    best = torch.where(torch.isnan(x), float("-inf"), x).amax(1)   # (nan_to_num would clip +-inf to finite too)
    return torch.where(torch.isnan(x).all(1), float("nan"), best)


def score_chunk_fp8(q8: torch.Tensor, q_scale: torch.Tensor, w: torch.Tensor, k8: torch.Tensor,
                    k_scale: torch.Tensor, out: torch.Tensor, *, s_first: int, ratio: int,
                    seg: Optional[torch.Tensor] = None, gmax: Optional[torch.Tensor] = None,
                    round_bf16: bool = False) -> None:
    """score_chunk on the packed operands (quant.naive.pack_rows): the queries q8 * q_scale, the keys
    k8 * k_scale; fp32 math as score_chunk (`round_bf16` as there). `gmax` [n, cap] (unpacked rows): also every
    row's group_maxima."""
    score_chunk(dequant_rows(q8, q_scale), w, dequant_rows(k8, k_scale), out, s_first=s_first, ratio=ratio, seg=seg,
                round_bf16=round_bf16, gmax=gmax)


def select_chunk(scores: Optional[torch.Tensor], out: torch.Tensor, cand: Optional[torch.Tensor] = None, *,
                 s_first: int, ratio: int, k_eff: int, topk: int, idx_offset: int = 0, window: int = 0,
                 seg: Optional[torch.Tensor] = None, gmax: Optional[torch.Tensor] = None) -> None:
    """out[:, :window] = window ids, out[:, window:] = the selected rows + idx_offset (-1 padded); `seg`: a
    packed batch's segment rows of the queries (each keeps to its own sequence; the ids are packed). `gmax`
    (the kernel's group maxima) is not needed here: the exact top-k has no threshold."""
    n = out.shape[0]
    pos, tok0, lo, hi = row_ranges(n, s_first, ratio, seg, out.device)
    if window:
        out[:, :window].copy_(window_ids(pos, tok0, window))
    if k_eff:
        # the rows the chunk's last query sees; packed: row i's columns are its own visible rows from column
        # 0 (no host sync for the bound)
        T = scores.shape[1] if seg is not None else min((s_first + n) // ratio, scores.shape[1])
        base = lo if seg is not None else torch.zeros_like(lo)
        # a query's visible rows rank first (order_key), and it sees at most k_eff of them: the
        # columns past k_eff (a packed chunk wider than its longest sequence) are -1
        sel = topk_in_ranges(scores[None, :n, :T], lo - base, hi - base, topk)[0, :, :k_eff]
        if seg is not None:     # columns -> packed rows
            sel = torch.where(sel >= 0, sel + base[:, None].to(sel.dtype), sel)
        if sel.shape[1] < k_eff:     # the chunk sees fewer rows than the whole sequence: pad
            sel = torch.cat([sel, sel.new_full((n, k_eff - sel.shape[1]), -1)], dim=1)
        out[:, window:window + k_eff].copy_(torch.where(sel >= 0, sel + idx_offset, sel))
