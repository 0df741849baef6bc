"""The 1-bit self-index in plain PyTorch: the reference of kernel.py (docs/semantics.md section 7).

Code of row t: bit d is 1 when K_t[d] >= 0 (sign(0) = +1), packed LSB first, 32 channels per int32
word (channel d is bit d % 32 of word d // 32); alpha_t = mean_d |K_t[d]| (fp32). Score of query s:
alpha_t * sum_d qbar_s[d] * (2 * bit - 1), qbar_s = sum_h q[s, h, :] in fp32.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..indexer.naive import row_ranges, store_scores, visible

WORD = 32      # channels per packed word


def pack_signs(rows: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [..., D // 32] int32 codes (bit d % 32 of word d // 32 is K[d] >= 0). NaN is not >= 0: 0."""
    bits = (rows.float() >= 0).to(torch.int64).unflatten(-1, (-1, WORD))
    words = (bits << torch.arange(WORD, device=rows.device)).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_signs(codes: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., D // 32] int32 -> [..., D] fp32 of +1 / -1."""
    bits = (codes.to(torch.int64)[..., None] >> torch.arange(WORD, device=codes.device)) & 1
    return (bits.flatten(-2)[..., :dim] * 2 - 1).float()


def codes(rows: torch.Tensor, codes_out: torch.Tensor, alpha_out: torch.Tensor) -> None:
    """rows [B, T, D] bf16 -> codes_out [B, T, D // 32] int32, alpha_out [B, T] fp32 (mean |K|)."""
    codes_out.copy_(pack_signs(rows))
    alpha_out.copy_(rows.float().abs().mean(-1))


def qbar(q: torch.Tensor) -> torch.Tensor:
    """[n, H, D] -> [n, D] fp32: the head-summed query."""
    return q.float().sum(1)


def score_chunk(q: torch.Tensor, codes: torch.Tensor, alpha: torch.Tensor, out: torch.Tensor, *, s_first: int,
                ratio: int, seg: Optional[torch.Tensor] = None) -> None:
    """out[:n, :T] = the masked 1-bit scores of queries [s_first, s_first + n) (q [n, H, D] bf16, codes
    [T, D // 32], alpha [T]): alpha_t * qbar_s . sign(K_t), -inf where t is not visible."""
    n, T, D = q.shape[0], codes.shape[0], q.shape[2]
    _, _, lo, hi = row_ranges(n, s_first, ratio, seg, q.device)
    sc = (qbar(q) @ unpack_signs(codes, D).T) * alpha.float()[None, :]
    store_scores(out, sc.masked_fill(~visible(T, lo, hi), float("-inf")), seg, lo, hi)
