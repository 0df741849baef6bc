"""The exact semantics of every CSA stage in plain PyTorch (fp32 math).

This is the ground truth the kernels are tested against (docs/semantics.md). It
is chunked over queries (and compressed rows) so it never holds more than
O(chunk x T) at once: `v4-flash` at S = 16,384 runs on a CPU in minutes.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from csa_dsl.rope import apply_rope, cos_sin, hadamard_matrix
from csa_dsl.spec import Compressor, Pipeline, RoPE


# ---------------------------------------------------------------------------------------
# 1. compressor
def rms_norm_bf16(x_bf16: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with fp32 math on a bf16 row, result in bf16 (as the model's RMSNorm)."""
    x = x_bf16.float()
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return (weight.float() * x).to(torch.bfloat16)


def rope_rows_bf16(x_bf16: torch.Tensor, rope: RoPE, positions: torch.Tensor, inverse: bool = False,
                   heads: bool = False) -> torch.Tensor:
    """Rotate the last rope.dim channels of bf16 rows at `positions` (fp32 math, bf16 out).

    x is [..., P, dim], or [..., P, H, dim] with heads=True (one position per row of heads).
    """
    rd = rope.dim
    cos, sin = cos_sin(rope, positions)
    if heads:
        cos, sin = cos[:, None, :], sin[:, None, :]
    out = x_bf16.clone()
    out[..., -rd:] = apply_rope(x_bf16[..., -rd:], cos, sin, inverse=inverse).to(torch.bfloat16)
    return out


def pool(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, c: Compressor,
         row_start: int, row_end: int) -> torch.Tensor:
    """Gated pooling of compressed rows [row_start, row_end): fp32 [B, rows, D] (before the cast)."""
    m, D = c.ratio, c.dim
    B = values.shape[0]
    n = row_end - row_start
    x = values[:, row_start * m: row_end * m].float().view(B, n, m, -1)
    g = gate[:, row_start * m: row_end * m].float().view(B, n, m, -1) + ape.float()
    if c.overlap:
        vals = x.new_zeros(B, n, 2 * m, D)
        logits = x.new_full((B, n, 2 * m, D), float("-inf"))
        vals[:, :, m:] = x[..., D:]
        logits[:, :, m:] = g[..., D:]
        # slots [0, m): the previous block's first half of channels (block 0 has none)
        vals[:, 1:, :m] = x[:, :-1, :, :D]
        logits[:, 1:, :m] = g[:, :-1, :, :D]
        if row_start > 0:
            p0 = (row_start - 1) * m
            vals[:, 0, :m] = values[:, p0: p0 + m, :D].float()
            logits[:, 0, :m] = gate[:, p0: p0 + m, :D].float() + ape[:, :D].float()
    else:
        vals, logits = x, g
    w = torch.softmax(logits, dim=2)  # per channel, over the slots
    return (vals * w).sum(dim=2)


def compress(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, norm: torch.Tensor,
             c: Compressor, row_chunk: int = 4096, position_offset: int = 0) -> torch.Tensor:
    """[B, S, c*D] fp32 values/gate logits -> [B, T = S // m, D] bf16 compressed rows.

    position_offset (in rows): row i is rotated at (i + position_offset) * m, for a shard that
    starts inside a longer sequence (its token 0 at a multiple of m)."""
    B, S, _ = values.shape
    T = S // c.ratio
    out = torch.empty(B, T, c.dim, dtype=torch.bfloat16, device=values.device)
    had = hadamard_matrix(c.dim, values.device) if c.hadamard else None
    for r0 in range(0, T, row_chunk):
        r1 = min(T, r0 + row_chunk)
        y = pool(values, gate, ape, c, r0, r1).to(torch.bfloat16)
        y = rms_norm_bf16(y, norm, c.norm_eps)
        if c.rope is not None:
            pos = (torch.arange(r0, r1, device=values.device) + position_offset) * c.ratio
            y = rope_rows_bf16(y, c.rope, pos)
        if had is not None:
            y = (y.float() @ had).to(torch.bfloat16)
        out[:, r0:r1] = y
    return out


# ---------------------------------------------------------------------------------------
# 2. lightning indexer score, 3. top-k
def visible_rows(positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """How many compressed rows each query position sees: (s + 1) // m (t <= s for m = 1)."""
    return (positions + 1) // ratio


def indexer_scores(idx_q: torch.Tensor, idx_w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """score[b,s,t] = sum_h w[b,s,h] * ReLU(q[b,s,h,:] . k[b,t,:]), fp32, unmasked. [B, s, T]."""
    logits = torch.einsum("bshd,btd->bsht", idx_q.float(), k.float())
    return (logits.relu_() * idx_w.float().unsqueeze(-1)).sum(dim=2)


def mask_invisible(scores: torch.Tensor, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    T = scores.shape[-1]
    vis = torch.arange(T, device=scores.device)[None, :] < visible_rows(positions, ratio)[:, None]
    return scores.masked_fill(~vis, float("-inf"))


def topk_select(scores: torch.Tensor, positions: torch.Tensor, ratio: int, topk: int) -> torch.Tensor:
    """Top-K_eff visible rows per query, ties to the smaller index, -1 padded. int32 [B, s, K_eff]."""
    T = scores.shape[-1]
    k_eff = min(topk, T)
    masked = mask_invisible(scores, positions, ratio)
    # a stable descending sort keeps equal scores in index order: ties go to the smaller index
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k_eff]
    nvis = visible_rows(positions, ratio).to(order.device)
    sel = torch.where(order < nvis[None, :, None], order, torch.full_like(order, -1))
    return sel.to(torch.int32)


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 chunk: int = 128, q_start: int = 0) -> torch.Tensor:
    """[B, S, K_eff] int32 compressed-row ids for queries at positions q_start + arange(S)."""
    B, S = idx_q.shape[:2]
    T = idx_k.shape[1]
    out = torch.empty(B, S, min(topk, T), dtype=torch.int32, device=idx_q.device)
    for s0 in range(0, S, chunk):
        s1 = min(S, s0 + chunk)
        pos = torch.arange(q_start + s0, q_start + s1, device=idx_q.device)
        sc = indexer_scores(idx_q[:, s0:s1], idx_w[:, s0:s1], idx_k)
        out[:, s0:s1] = topk_select(sc, pos, ratio, topk)
    return out


# ---------------------------------------------------------------------------------------
# 4. sparse attention
def window_indices(positions: torch.Tensor, window: int) -> torch.Tensor:
    """[len(positions), W] int32: max(0, s-W+1) .. s in order, -1 padded at the end for s < W-1."""
    s = positions[:, None]
    idx = (s - window + 1).clamp(min=0) + torch.arange(window, device=positions.device)[None, :]
    return torch.where(idx > s, torch.full_like(idx, -1), idx).to(torch.int32)


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, scale: float, v_dim: int,
                     sink: Optional[torch.Tensor] = None, return_lse: bool = False):
    """q [B,s,H,D], kv [B,R,D], indices [B,s,NI] (-1 = empty) -> fp32 out [B,s,H,v_dim] (and LSE [B,s,H]).

    Softmax over the valid keys with exp(sink_h) in the denominator; a query with no
    valid key gets zeros (its LSE is log(exp(sink)) = sink, or -inf without a sink).
    """
    B, s, H, D = q.shape
    valid = indices >= 0
    rows = torch.gather(kv, 1, indices.clamp(min=0).long().reshape(B, -1, 1).expand(-1, -1, D).contiguous())
    rows = rows.view(B, s, -1, D).float()
    logits = torch.einsum("bshd,bsnd->bshn", q.float(), rows) * scale
    logits = logits.masked_fill(~valid[:, :, None, :], float("-inf"))
    m = logits.amax(dim=-1)  # [B,s,H]
    if sink is not None:
        m = torch.maximum(m, sink.float()[None, None, :].expand_as(m))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(logits - m[..., None])
    den = p.sum(-1)
    if sink is not None:
        den = den + torch.exp(sink.float()[None, None, :] - m)
    num = torch.einsum("bshn,bsnd->bshd", p, rows[..., :v_dim])
    out = torch.where(den[..., None] > 0, num / den.clamp(min=1e-30)[..., None], torch.zeros_like(num))
    if return_lse:
        lse = torch.where(den > 0, torch.log(den.clamp(min=1e-30)) + m, torch.full_like(den, float("-inf")))
        return out, lse
    return out


def attention_rows(spec: Pipeline, kv: torch.Tensor, compressed_kv: Optional[torch.Tensor]) -> torch.Tensor:
    """The attention's key/value rows: [kv (S rows) || compressed kv (T rows)], or kv alone for m = 1."""
    if spec.compressor is None:
        return kv
    return torch.cat([kv, compressed_kv], dim=1)


def key_list(spec: Pipeline, positions: torch.Tensor, selected: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, s, W + K] int32: the window rows, then the selected rows offset into the concatenated KV."""
    B = selected.shape[0]
    off = spec.selected_offset(seq_len)
    sel = torch.where(selected >= 0, selected + off, selected)
    if spec.attention.window == 0:
        return sel.to(torch.int32)
    win = window_indices(positions, spec.attention.window)[None].expand(B, -1, -1)
    return torch.cat([win, sel], dim=-1).to(torch.int32)


def finish_output(spec: Pipeline, attn_fp32: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Cast to bf16, then (V4) inverse RoPE of the last dims at the query position, as the model does."""
    out = attn_fp32.to(torch.bfloat16)
    r = spec.attention.inverse_rope
    if r is not None:
        out = rope_rows_bf16(out, r, positions, inverse=True, heads=True)
    return out


# ---------------------------------------------------------------------------------------
# whole pipeline
def index_keys(spec: Pipeline, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    ic = spec.indexer.compressor
    if ic is None:
        return inputs["idx_k"]
    return compress(inputs["idx_kv"], inputs["idx_gate"], inputs["idx_ape"], inputs["idx_norm"], ic)


def compressed_kv(spec: Pipeline, inputs: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
    c = spec.compressor
    if c is None:
        return None
    return compress(inputs["cmp_kv"], inputs["cmp_gate"], inputs["cmp_ape"], inputs["cmp_norm"], c)


def forward(spec: Pipeline, inputs: Dict[str, torch.Tensor], chunk: int = 128, return_indices: bool = False,
            progress=None):
    """The exact CSA forward: out [B,S,H,Dv] bf16 (and the key lists [B,S,W+K] int32)."""
    q = inputs["q"]
    B, S = q.shape[:2]
    a = spec.attention
    k_idx = index_keys(spec, inputs)
    rows = attention_rows(spec, inputs["kv"], compressed_kv(spec, inputs))
    sink = inputs.get("sink") if a.sink else None
    width = spec.index_width(S)
    out = torch.empty(B, S, a.heads, a.v_dim, dtype=torch.bfloat16, device=q.device)
    idx_all = torch.empty(B, S, width, dtype=torch.int32, device=q.device) if return_indices else None
    for s0 in range(0, S, chunk):
        s1 = min(S, s0 + chunk)
        pos = torch.arange(s0, s1, device=q.device)
        sc = indexer_scores(inputs["idx_q"][:, s0:s1], inputs["idx_w"][:, s0:s1], k_idx)
        sel = topk_select(sc, pos, spec.ratio, spec.indexer.topk)
        keys = key_list(spec, pos, sel, S)
        att = sparse_attention(q[:, s0:s1], rows, keys, a.softmax_scale, a.v_dim, sink)
        out[:, s0:s1] = finish_output(spec, att, pos)
        if idx_all is not None:
            idx_all[:, s0:s1] = keys
        if progress is not None:
            progress(s1 - s0)
    return (out, idx_all) if return_indices else out
