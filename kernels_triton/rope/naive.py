"""RoPE in plain PyTorch (fp32 math on bf16 rows): the reference of kernels_triton.rope.kernel."""
from __future__ import annotations

from typing import Optional

import torch

from ..varlen.naive import SEG_POS
from .tables import Rotary, cos_sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate interleaved pairs of x[..., P, ..., dim] (fp32 math, returns fp32).

    cos/sin broadcast against x's pair axis: shape [P, dim//2] aligned with x's position axis
    by the caller (e.g. cos[:, None, :] for [P, H, dim])."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    s = -sin if inverse else sin
    return torch.stack((a * cos - b * s, a * s + b * cos), dim=-1).flatten(-2)


def rope_rows_bf16(x_bf16: torch.Tensor, rot: Rotary, positions: torch.Tensor, inverse: bool = False,
                   heads: bool = False) -> torch.Tensor:
    """Rotate the last rot.dim channels of bf16 rows at `positions` (fp32 math, bf16 out).

    x is [..., P, dim], or [..., P, H, dim] with heads=True (one position per row of heads)."""
    rd = rot.dim
    cos, sin = cos_sin(rot, positions)
    if heads:
        cos, sin = cos[:, None, :], sin[:, None, :]
    out = x_bf16.clone()
    out[..., -rd:] = apply_rope(x_bf16[..., -rd:], cos, sin, inverse=inverse).to(torch.bfloat16)
    return out


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos0: int = 0, inverse: bool = True,
          seg: Optional[torch.Tensor] = None) -> torch.Tensor:
    """In place on x [N, H, Dv]: query row n rotated by table row pos0 + n (kernel.apply_rope_'s op); `seg`
    (a packed batch): by the row's position inside its own sequence."""
    rd = 2 * cos.shape[1]
    n = x.shape[0]
    if seg is not None:
        p = seg[:, SEG_POS].long().clamp(max=cos.shape[0] - 1)
        c, s = cos[p, None, :], sin[p, None, :]
    else:
        c, s = cos[pos0:pos0 + n, None, :], sin[pos0:pos0 + n, None, :]
    x[..., -rd:] = apply_rope(x[..., -rd:], c, s, inverse=inverse).to(torch.bfloat16)
    return x
