"""Sparse MLA attention in plain PyTorch (fp32 math): the reference of kernel.py.

docs/semantics.md sections 4 and 9. `attend` has the signature the composed program calls
(one chunk of queries of one batch element, written into `out`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from kernels_triton.indexer.naive import window_ids, window_indices
from kernels_triton.rope import naive as rope_naive

KEY_BLOCK = 64     # key slots per step of the sums (the kernel's block of keys)


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, scale: float, v_dim: int,
                     sink: Optional[torch.Tensor] = None, return_lse: bool = False):
    """q [B,s,H,D], kv [B,R,D], indices [B,s,NI] (-1 = empty) -> fp32 out [B,s,H,v_dim] (and LSE [B,s,H]).

    The dense formula over the valid keys, sink in the denominator:
        M   = max(valid logits, sink)          a NaN anywhere makes M NaN
        out = sum_j exp(l_j - M) V_j / (sum_j exp(l_j - M) + exp(sink - M))
    so non-finite values propagate as IEEE arithmetic does (a NaN row makes every query that lists
    it NaN, a NaN sink its head). Empty slots are never read (their rows are zeros and their
    logits -inf). When the denominator is exactly 0 (no valid key and no sink, or a -inf sink)
    the output is 0, never NaN; the LSE is then -inf (with a finite sink and no key: the sink).
    """
    B, s, H, D = q.shape
    R = kv.shape[1]
    # the sums over keys run block by block (KEY_BLOCK slots, the list -1 padded to whole blocks), so a
    # list's value does not depend on how many -1 slots trail it: a packed batch's lists are as wide as
    # its longest sequence's and must give each sequence the bits of its own run
    pad = -indices.shape[-1] % KEY_BLOCK
    if pad:
        indices = torch.cat([indices, indices.new_full((*indices.shape[:-1], pad), -1)], dim=-1)
    valid = (indices >= 0) & (indices < R)
    flat = torch.where(valid, indices, 0).long().reshape(B, -1)
    rows = torch.stack([kv[b].index_select(0, flat[b]) for b in range(B)]).view(B, s, -1, D)
    rows = rows.float().masked_fill(~valid[..., None], 0.0)
    logits = torch.einsum("bshd,bsnd->bshn", q.float(), rows) * scale
    logits = logits.masked_fill(~valid[:, :, None, :], float("-inf"))
    m = logits.amax(dim=-1)  # [B,s,H]; NaN propagates
    if sink is not None:
        m = torch.maximum(m, sink.float()[None, None, :].expand_as(m))
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)   # nothing to subtract (NaN stays NaN)
    p = torch.exp(logits - m[..., None])
    den = torch.zeros_like(m)
    num = q.new_zeros((B, s, H, v_dim), dtype=torch.float32)
    for j in range(0, p.shape[-1], KEY_BLOCK):
        den = den + p[..., j:j + KEY_BLOCK].sum(-1)
        num = num + torch.einsum("bshn,bsnd->bshd", p[..., j:j + KEY_BLOCK], rows[:, :, j:j + KEY_BLOCK, :v_dim])
    if sink is not None:
        den = den + torch.exp(sink.float()[None, None, :] - m)
    out = torch.where((den == 0)[..., None], torch.zeros_like(num), num / den[..., None])
    if return_lse:
        return out, torch.log(den) + m
    return out


def check_causal_bound(keys: torch.Tensor, pos0: int, window: int, causal_bound: Tuple[int, int]) -> None:
    """The promise kernel.attend's block skipping relies on: past slot window + min(k_sel, (p+1)//ratio)
    of the query at position p, every slot is -1. Raises when a program passes a bound its lists break."""
    k_sel, ratio = causal_bound
    pos = torch.arange(pos0, pos0 + keys.shape[0], device=keys.device)
    n_valid = window + torch.clamp((pos + 1) // ratio, max=k_sel)
    beyond = torch.arange(keys.shape[1], device=keys.device)[None, :] >= n_valid[:, None]
    if bool(((keys >= 0) & beyond).any()):
        raise ValueError(f"key lists break the causal bound (window {window}, k_sel {k_sel}, ratio {ratio}): "
                         f"a valid id lies past slot window + min(k_sel, (p+1)//ratio)")


def attend(q: torch.Tensor, kv: torch.Tensor, keys: Optional[torch.Tensor], out: torch.Tensor,
           sink: Optional[torch.Tensor] = None, *, scale: float, v_dim: int, pos0: int = 0, window: int = 0,
           causal_bound: Optional[Tuple[int, int]] = None, rope_cos: Optional[torch.Tensor] = None,
           rope_sin: Optional[torch.Tensor] = None, seg: Optional[torch.Tensor] = None) -> None:
    """out [n,H,Dv] bf16 <- attention of q [n,H,D] (positions pos0..) over the rows keys [n,NI] of kv [R,D]
    (one batch element); keys None: the sliding window of `window` rows alone. `causal_bound` is checked,
    not used (the kernel skips the blocks past it). With the RoPE tables, the bf16 output's last channels
    are then rotated back (inverse RoPE) at positions pos0.. (seg: the packed rows' own positions), as
    kernels_triton.rope.naive.rope_ does (the kernel fuses it into its epilogue). A packed batch's implicit
    windows (keys None with seg) are each query's own sequence's: rows seg[:, 1] + the window of seg[:, 0]."""
    if keys is None:
        keys = (window_indices(torch.arange(pos0, pos0 + q.shape[0], device=q.device), window) if seg is None
                else window_ids(seg[:, 0].long(), seg[:, 1].long(), window))
    elif causal_bound is not None:
        check_causal_bound(keys, pos0, window, causal_bound)
    out.copy_(sparse_attention(q[None], kv[None], keys[None], scale, v_dim, sink)[0].to(out.dtype))
    if rope_cos is not None:
        rope_naive.rope_(out, rope_cos, rope_sin, pos0, inverse=True, seg=seg)
