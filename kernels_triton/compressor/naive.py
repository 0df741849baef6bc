"""The compressor in plain PyTorch (fp32 math, bf16 rows): the reference of kernel.py.

docs/semantics.md section 1: per channel softmax over the pooled slots and a weighted sum,
cast to bf16, RMSNorm (fp32 math), RoPE on the last channels at position i*m, and for an
indexer's compressor an orthonormal Hadamard rotation of the whole row.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..quant.naive import quant_dequant

from ..rope.naive import apply_rope


@functools.lru_cache(maxsize=8)
def _hadamard_cpu(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_matrix(n: int, device=None) -> torch.Tensor:
    """Orthonormal Sylvester Hadamard matrix [n, n] fp32 (H[i,j] = (-1)^popcount(i&j) / sqrt(n))."""
    return (_hadamard_cpu(n) * n ** -0.5).to(device)


def rms_norm_bf16(x_bf16: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with fp32 math on a bf16 row, result in bf16 (as the model's RMSNorm)."""
    x = x_bf16.float()
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return (weight.float() * x).to(torch.bfloat16)


def pool(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, ratio: int, overlap: bool,
         row_start: int, row_end: int) -> torch.Tensor:
    """Gated pooling of compressed rows [row_start, row_end): fp32 [B, rows, D] (before the cast)."""
    m = ratio
    D = values.shape[-1] // (2 if overlap else 1)
    B = values.shape[0]
    n = row_end - row_start
    x = values[:, row_start * m: row_end * m].float().view(B, n, m, -1)
    g = gate[:, row_start * m: row_end * m].float().view(B, n, m, -1) + ape.float()
    if overlap:
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


def pool_packed(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, ratio: int, overlap: bool,
                row_seg: torch.Tensor) -> torch.Tensor:
    """pool() of a packed batch (B = 1): row r is row i = row_seg[r, 1] of the sequence starting at token
    row_seg[r, 0] (its blocks never cross into another sequence; row 0 of each has no previous block);
    rows no sequence owns (i = -1) pool nothing (zeros). fp32 [rows, D]."""
    m = ratio
    D = values.shape[-1] // (2 if overlap else 1)
    tok0, i = row_seg[:, 0].long(), row_seg[:, 1].long()
    owned = i >= 0
    j = torch.arange(m, device=values.device)
    own = torch.where(owned[:, None], tok0[:, None] + i[:, None] * m + j[None, :], 0)       # [R, m]
    x = values[0, own].float()
    g = gate[0, own].float() + ape.float()
    if overlap:
        has_prev = (owned & (i > 0))[:, None, None]
        prev = torch.where(has_prev[:, :, 0], own - m, 0)
        vals = torch.cat([torch.where(has_prev, values[0, prev, :D].float(), 0.0), x[..., D:]], dim=1)
        logits = torch.cat([torch.where(has_prev, gate[0, prev, :D].float() + ape[:, :D].float(), float("-inf")),
                            g[..., D:]], dim=1)
    else:
        vals, logits = x, g
    w = torch.softmax(logits, dim=1)  # per channel, over the slots
    return torch.where(owned[:, None], (vals * w).sum(dim=1), 0.0)


def compress(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, norm: torch.Tensor, *, ratio: int,
             overlap: bool, hadamard: bool = False, eps: float = 1e-6, cos: Optional[torch.Tensor] = None,
             sin: Optional[torch.Tensor] = None, row_start: int = 0, row_end: Optional[int] = None,
             out: Optional[torch.Tensor] = None, position_offset: int = 0, quant_format: Optional[str] = None,
             quant_block: int = 0, quant_channels: int = 0, row_seg: Optional[torch.Tensor] = None,
             row_chunk: int = 4096) -> torch.Tensor:
    """[B, S, c*D] fp32 values / gate logits -> compressed rows [row_start, row_end) as [B, rows, D] bf16.

    The kernel's signature (kernel.compress): `cos`, `sin` are the RoPE tables by position (None: no
    RoPE); row i is rotated at (i + position_offset) * m, for a shard that starts inside a longer
    sequence; `out` (a [B, rows, D] bf16 view) is written. `quant_format` (None: none): channels
    [0, quant_channels) of every finished row quantise-dequantised in blocks of `quant_block`
    (docs/semantics.md section 5, quant/naive.quant_dequant). `row_seg`: a packed batch's row table
    (B = 1, all rows; pool_packed), rows rotated at their own sequence's positions, unowned rows zeros."""
    B, S, _ = values.shape
    D = norm.shape[0]
    T = S // ratio
    row_end = T if row_end is None else row_end
    if row_seg is not None and (B != 1 or row_start or row_end != T or position_offset):
        raise ValueError("a packed batch (row_seg) is one sequence axis: B = 1, all rows, no position_offset")
    if out is None:
        out = torch.empty(B, row_end - row_start, D, dtype=torch.bfloat16, device=values.device)
    had = hadamard_matrix(D, values.device) if hadamard else None
    for r0 in range(row_start, row_end, row_chunk):
        r1 = min(row_end, r0 + row_chunk)
        if row_seg is None:
            y = pool(values, gate, ape, ratio, overlap, r0, r1).to(torch.bfloat16)
            pos = (torch.arange(r0, r1, device=values.device) + position_offset) * ratio
        else:
            y = pool_packed(values, gate, ape, ratio, overlap, row_seg[r0:r1])[None].to(torch.bfloat16)
            pos = (row_seg[r0:r1, 1].long().clamp(min=0) * ratio).clamp(max=cos.shape[0] - 1 if cos is not None else 0)
        y = rms_norm_bf16(y, norm, eps)
        if cos is not None:
            rd = 2 * cos.shape[1]
            y = y.clone()
            y[..., -rd:] = apply_rope(y[..., -rd:], cos[pos], sin[pos]).to(torch.bfloat16)
        if had is not None:
            y = (y.float() @ had).to(torch.bfloat16)
        if quant_format is not None:
            y = quant_dequant(y, quant_format, quant_block, quant_channels)
        if row_seg is not None:
            y = torch.where((row_seg[r0:r1, 1] >= 0)[None, :, None], y, torch.zeros_like(y))
        out[:, r0 - row_start:r1 - row_start] = y
    return out
