"""RoPE with YaRN frequencies, as in the public DeepSeek-V4 inference code.

Rotation acts on interleaved pairs (x[2i], x[2i+1]) as one complex number. The
tables are fp32: angle = float32(position) * inv_freq, then cos/sin, so every
path (reference, Triton, composed) rotates by bitwise the same factors.
"""
from __future__ import annotations

import functools
import math

import torch

from .spec import RoPE


@functools.lru_cache(maxsize=16)
def _inv_freq_cpu(dim: int, base: float, factor: float, orig: int, beta_fast: float, beta_slow: float) -> torch.Tensor:
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if orig > 0:
        def corr_dim(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr_dim(beta_fast)), 0)
        high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


def inv_freq(rope: RoPE) -> torch.Tensor:
    """[rope.dim // 2] fp32 inverse frequencies (YaRN-corrected when rope.yarn is set)."""
    if rope.yarn is None:
        return _inv_freq_cpu(rope.dim, float(rope.base), 1.0, 0, 32.0, 1.0)
    y = rope.yarn
    return _inv_freq_cpu(rope.dim, float(y.base), float(y.factor), int(y.original_seq_len),
                         float(y.beta_fast), float(y.beta_slow))


def cos_sin(rope: RoPE, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [len(positions), rope.dim // 2] fp32 on positions' device."""
    f = inv_freq(rope).to(positions.device)
    ang = positions.to(torch.float32)[:, None] * f[None, :]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate interleaved pairs of x[..., P, ..., dim] (fp32 math, returns fp32).

    cos/sin broadcast against x's pair axis: shape [P, dim//2] aligned with x's
    position axis by the caller (e.g. cos[:, None, :] for [P, H, dim]).
    """
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    s = -sin if inverse else sin
    return torch.stack((a * cos - b * s, a * s + b * cos), dim=-1).flatten(-2)


@functools.lru_cache(maxsize=8)
def _hadamard_cpu(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_matrix(n: int, device=None) -> torch.Tensor:
    """Orthonormal Sylvester Hadamard matrix [n, n] fp32 (H[i,j] = (-1)^popcount(i&j) / sqrt(n))."""
    return (_hadamard_cpu(n) * n ** -0.5).to(device)
