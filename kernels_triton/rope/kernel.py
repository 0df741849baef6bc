"""In-place RoPE (inverse by default) of the last rot.dim channels of bf16 rows, on Triton.

Exactly `naive.rope_rows_bf16(x, rot, positions, inverse, heads=True)`:
x [N, H, Dv] bf16 (a chunk of attention outputs: query n at positions[n], all heads
share it), interleaved pairs (x[2k], x[2k+1]) of the last rot.dim channels rotated in
fp32 by the fp32 cos/sin table rows of tables.cos_sin (sin negated for the
inverse), rounded to bf16 (nearest even) in place. Other channels are not touched:
the kernel moves 2 x N*H*rot.dim*2 bytes.

Grid: one program per BLOCK (query, head) rows, flattened row r = n*H + h; each program
loads a [BLOCK, rot.dim/2, 2] tile (the row's rot.dim channels are contiguous), splits
it into the pair halves, rotates, joins and stores. No FMA contraction
(enable_fp_fusion=False) so a*cos - b*sin rounds like the reference's separate ops.
"""
from __future__ import annotations

from typing import Union

import torch
import triton
import triton.language as tl

from .._bits import round_bf16
from .._env import kernels_interpreted, next_pow2
from .tables import Rotary, cos_sin, rope_tables

ROPE_BLOCK_ELEMS = 4096   # elements (rows x rot.dim) per program
ROPE_WARPS = 4


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, n_pos, tab0, stride_n, stride_h, col0,
                 H: tl.constexpr, HALF: tl.constexpr, HALFP: tl.constexpr, BLOCK: tl.constexpr,
                 INVERSE: tl.constexpr):
    # rows are (query, head) pairs, H is a constexpr so n = r // H is a shift; each row's
    # rope channels are 2*HALF contiguous bf16, loaded as one vector
    pid = tl.program_id(0)
    r = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    r_ok = r < n_pos.to(tl.int64) * H
    n = r // H
    h = r % H
    c2 = tl.arange(0, 2 * HALFP)
    c_ok = c2 < 2 * HALF
    base = n * stride_n + h * stride_h + col0                # int64 element offset of the rope channels
    mask = r_ok[:, None] & c_ok[None, :]
    x = tl.load(x_ptr + base[:, None] + c2[None, :], mask=mask, other=0.0).to(tl.float32)
    a, b = tl.split(tl.reshape(x, (BLOCK, HALFP, 2)))
    k = tl.arange(0, HALFP)
    tmask = r_ok[:, None] & (k < HALF)[None, :]
    toff = (tab0 + n)[:, None] * HALF + k[None, :]          # table row = position (tab0 + n)
    c = tl.load(cos_ptr + toff, mask=tmask, other=1.0)
    s = tl.load(sin_ptr + toff, mask=tmask, other=0.0)
    if INVERSE:
        s = -s
    ra = round_bf16(a * c - b * s)
    rb = round_bf16(a * s + b * c)
    y = tl.reshape(tl.join(ra, rb), (BLOCK, 2 * HALFP))
    tl.store(x_ptr + base[:, None] + c2[None, :], y.to(tl.bfloat16), mask=mask)


def _block_rows(rope_dim: int) -> int:
    return max(1, min(256, ROPE_BLOCK_ELEMS // next_pow2(rope_dim)))


def check_rope_inputs(x, rot, positions) -> torch.Tensor:
    """Validate before any launch; return the positions: an int pos0, or the int tensor [N]."""
    if not isinstance(rot, Rotary):
        raise TypeError(f"rot must be a kernels_triton.rope.Rotary, got {type(rot).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be [N, H, Dv] (or [B, N, H, Dv]) attention outputs, got shape {tuple(x.shape)}")
    if x.dtype != torch.bfloat16:
        raise TypeError(f"x must be bfloat16, got {x.dtype}; the in-place RoPE rewrites bf16 rows")
    N, Dv = x.shape[-3], x.shape[-1]
    if rot.dim > Dv:
        raise ValueError(f"rot.dim = {rot.dim} > the row's channels Dv = {Dv}; RoPE acts on the last rot.dim "
                         f"channels, so use rot.dim <= {Dv}")
    if x.stride(-1) != 1:
        raise ValueError(f"x's channel axis must be contiguous (stride 1), got strides {tuple(x.stride())}; "
                         f"call .contiguous() (the RoPE is in place, so pass the tensor you keep)")
    dev = x.device
    if dev.type != "cuda" and not kernels_interpreted(_rope_kernel):
        raise ValueError(f"the Triton RoPE needs CUDA tensors (got {dev}); on a CPU use "
                         f"kernels_triton.rope.naive.rope_rows_bf16, or set TRITON_INTERPRET=1 for tests")
    if isinstance(positions, bool) or not isinstance(positions, (int, torch.Tensor)):
        raise TypeError(f"positions must be an int (first position: pos0 + arange(N)) or an int tensor [N], "
                        f"got {type(positions).__name__}")
    if isinstance(positions, int):
        if positions < 0:
            raise ValueError(f"positions (pos0) must be >= 0, got {positions}")
        return positions
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise TypeError(f"positions must be an integer tensor, got {positions.dtype}; use .long()")
    if tuple(positions.shape) != (N,):
        raise ValueError(f"positions must be [N] = [{N}] (one position per query row of x), got "
                         f"{tuple(positions.shape)}")
    if positions.device != dev:
        raise ValueError(f"positions is on {positions.device} but x is on {dev}; move it with .to(x.device)")
    return positions


def apply_rope_(x: torch.Tensor, rot: Rotary, positions: Union[torch.Tensor, int], inverse: bool = True) -> torch.Tensor:
    """Rotate x[..., -rot.dim:] in place (inverse by default) at `positions`; returns x.

    x: [N, H, Dv] or [B, N, H, Dv] bf16 with a contiguous channel axis (row/head strides free);
    positions: int tensor [N] (shared by every batch element and head) or an int pos0 for
    positions pos0 + arange(N).
    """
    pos = check_rope_inputs(x, rot, positions)
    if x.numel() == 0:
        return x
    if isinstance(pos, int):
        # positions pos0 + arange(N): one cached table from position 0, grown by powers of two,
        # so the chunks of a composed forward share it instead of rebuilding tables per chunk
        end = next_pow2(max(pos + x.shape[-3], 1024))
        cos, sin = rope_tables(rot, 0, end, 1, x.device)
        tab0 = pos
    else:
        cos, sin = (t.contiguous() for t in cos_sin(rot, pos))
        tab0 = 0
    views = [x] if x.dim() == 3 else list(x.unbind(0))
    for v in views:
        N, H, Dv = v.shape
        BLOCK = _block_rows(rot.dim)
        grid = (triton.cdiv(N * H, BLOCK),)
        _rope_kernel[grid](v, cos, sin, N, tab0, v.stride(0), v.stride(1), Dv - rot.dim,
                           H=H, HALF=rot.dim // 2, HALFP=next_pow2(rot.dim // 2), BLOCK=BLOCK,
                           INVERSE=bool(inverse), num_warps=ROPE_WARPS, enable_fp_fusion=False)
    return x
