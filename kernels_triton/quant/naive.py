"""The quantisation steps in plain PyTorch: the reference of kernel.py (docs/semantics.md section 5).

`quant_dequant` puts each block of channels onto a format's grid times a power-of-two scale and
back (the tensor keeps its dtype); `fp8_rows` packs rows that are already on such grids into FP8
e4m3 values times one power-of-two scale per row (exact where the row's range fits e4m3). The
ops `quant_rows` and `pack_rows` have the kernel launchers' signatures.

A block with a NaN or an infinity becomes all NaN (semantics section 9: never silently finite).
"""
from __future__ import annotations

from typing import Optional

import torch

from .formats import E4M3, PACK_AMAX_FLOOR, Format, get


def scale_exponent(amax: torch.Tensor, f: Format) -> torch.Tensor:
    """ceil(log2(amax / qmax)) exactly (int32), for positive normal fp32 amax: the smallest k with
    qmax * 2^k >= amax. With amax = m * 2^e (frexp, m in [0.5, 1)) and qmax = mq * 2^eq, that is
    e - eq, plus 1 when m > mq. No rounded division or logarithm decides it."""
    m, e = torch.frexp(amax.float())
    mq, eq = torch.frexp(torch.tensor(f.qmax, dtype=torch.float32))
    return (e - eq + (m > mq).to(e.dtype)).to(torch.int32)


def exp2(k: torch.Tensor) -> torch.Tensor:
    """2^k as fp32 for an integer tensor (exact)."""
    return torch.ldexp(torch.ones(k.shape, dtype=torch.float32, device=k.device), k.to(torch.int32))


def round_to_grid(y: torch.Tensor, f: Format) -> torch.Tensor:
    """The nearest value of the format's grid (ties to even), for |y| <= qmax (fp32 in, fp32 out)."""
    _, e = torch.frexp(y)                            # |y| = m * 2^e, m in [0.5, 1): floor(log2|y|) = e - 1
    e = torch.clamp(e - 1, min=f.min_exp)            # below the smallest normal: the subnormal spacing
    step = exp2(e - f.mant)
    return torch.round(y / step) * step              # torch.round: half to even


def quant_dequant(x: torch.Tensor, fmt: str, block: int, channels: Optional[int] = None) -> torch.Tensor:
    """Channels [0, channels) of x (default: all) quantise-dequantised in blocks of `block` along the
    last axis; the other channels unchanged. Same dtype as x; fp32 math."""
    f = get(fmt)
    D = x.shape[-1]
    n = D if channels is None else channels
    if n % block or n > D:
        raise ValueError(f"quantised channels {n} must be a multiple of the block {block} and <= {D}")
    xf = x.float()
    head = xf[..., :n].reshape(*x.shape[:-1], n // block, block)
    ok = torch.isfinite(head)
    finite = ok.all(dim=-1, keepdim=True)
    amax = torch.where(ok, head.abs(), 0.0).amax(dim=-1, keepdim=True).clamp_min(f.amax_floor)
    k = scale_exponent(amax, f)
    z = torch.clamp(round_to_grid(head * exp2(-k), f), -f.qmax, f.qmax) * exp2(k)
    z = torch.where(finite, z, float("nan"))
    out = torch.cat([z.reshape(*x.shape[:-1], n), xf[..., n:]], dim=-1)
    return out.to(x.dtype)


def fp8_rows(x: torch.Tensor):
    """(x8 float8_e4m3fn [..., D], scale fp32 [...]): x ~ x8 * scale, scale a power of two per row with the
    row's largest |value| at most 448 * scale. Exact for every element of magnitude >= 2^-9 * scale whose
    significand fits 4 bits (FP4 / FP8 grid values do); others are rounded to the e4m3 grid (|error| <=
    2^-10 * scale <= 2^-17.8 * the row's amax). A row with a non-finite value has scale NaN."""
    xf = x.float()
    ok = torch.isfinite(xf)
    amax = torch.where(ok, xf.abs(), 0.0).amax(dim=-1).clamp_min(PACK_AMAX_FLOOR)
    k = scale_exponent(amax, E4M3)
    y = round_to_grid(torch.where(ok, xf, 0.0) * exp2(-k)[..., None], E4M3)
    scale = torch.where(ok.all(dim=-1), exp2(k), float("nan"))
    return y.to(torch.float8_e4m3fn), scale


# ---------------------------------------------------------------------------------------
# the ops, with the kernel launchers' signatures
def quant_rows(src: torch.Tensor, out: torch.Tensor, *, fmt: str, block: int, channels: int) -> None:
    """out <- src with channels [0, channels) of every row quantise-dequantised (a quantising copy)."""
    out.copy_(quant_dequant(src, fmt, block, channels))


def pack_rows(x: torch.Tensor, x8: torch.Tensor, x_scale: torch.Tensor, *, fmt: str, block: int) -> None:
    """Rows [..., DI] (the index keys, or a chunk's index queries) -> quantise-dequantised (fmt, block;
    idempotent on keys a compressor already quantised) and packed: x8 [..., DI] (e4m3 grid values, in x8's
    dtype), x_scale [...] fp32. No score reads the values of a row whose scale is NaN, and the kernel
    (quant.kernel._pack_kernel) writes zeros for a whole block whose step overflows fp32, where this zeroes only
    the overflowing values."""
    v, s = fp8_rows(quant_dequant(x, fmt, block))
    x8.copy_(v)
    x_scale.copy_(s)


def dequant_rows(x8: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
    """fp32 rows x8 * scale (the values the FP8 score multiplies)."""
    return x8.float() * x_scale.float()[..., None]
