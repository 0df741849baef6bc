"""In-place RoPE (inverse by default) of the last rot_dim channels of bf16 rows, on Triton.

Exactly `naive.rope_(x, cos, sin, pos0, inverse)`:
x [N, H, Dv] bf16 (a chunk of attention outputs: query n at position pos0 + n, all heads
share it), interleaved pairs (x[2k], x[2k+1]) of the last rot_dim channels rotated in
fp32 by the rows of the program's fp32 cos/sin tables (tables.fill_tables; sin negated for
the inverse), rounded to bf16 (nearest even) in place. Other channels are not touched:
the kernel moves 2 x N*H*rot_dim*2 bytes.

Grid: one program per BLOCK (query, head) rows, flattened row r = n*H + h; each program
loads a [BLOCK, rot_dim/2, 2] tile (the row's rot_dim channels are contiguous), splits
it into the pair halves, rotates, joins and stores. No FMA contraction
(enable_fp_fusion=False) so a*cos - b*sin rounds like the reference's separate ops.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._bits import round_bf16
from .._env import kernels_interpreted, next_pow2
from ..varlen.kernel import load_token_segments, segments_arg

ROPE_BLOCK_ELEMS = 4096   # elements (rows x rot_dim) per program
ROPE_WARPS = 4


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, seg_ptr, n_pos, tab0, stride_n, stride_h, col0,
                 H: tl.constexpr, HALF: tl.constexpr, HALFP: tl.constexpr, BLOCK: tl.constexpr,
                 INVERSE: tl.constexpr, VARLEN: tl.constexpr):
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
    if VARLEN:      # a packed batch: row n's position inside its own sequence (tab0: the tables' last row,
        # a bound that keeps a position past the plan's max_seqlen from reading outside the tables)
        p, _, _ = load_token_segments(seg_ptr, n, r_ok)
        p = tl.minimum(p, tab0)
        toff = p.to(tl.int64)[:, None] * HALF + k[None, :]
    else:
        toff = (tab0 + n)[:, None] * HALF + k[None, :]      # table row = position (tab0 + n)
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


def check_tables(cos, sin, rows: int, dev, what: str = "RoPE") -> int:
    """Validate a program's RoPE tables (fp32 [P, rot_dim // 2], P >= rows); return rot_dim."""
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: {name} must be a torch.Tensor table, got {type(t).__name__}")
        if t.dtype != torch.float32 or t.dim() != 2 or not t.is_contiguous():
            raise ValueError(f"{what}: {name} must be a contiguous fp32 table [positions, rot_dim // 2] "
                             f"(kernels_triton.rope.tables.fill_tables), got {t.dtype} {tuple(t.shape)}")
        if t.device != dev:
            raise ValueError(f"{what}: {name} is on {t.device} but the rows are on {dev}")
    if cos.shape != sin.shape:
        raise ValueError(f"{what}: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ")
    if cos.shape[0] < rows:
        raise ValueError(f"{what}: the tables hold positions 0..{cos.shape[0] - 1} but position {rows - 1} is "
                         f"needed; build them for the whole sequence")
    return 2 * int(cos.shape[1])


def check_rope_inputs(x, cos, sin, pos0, check_rows: bool = True) -> int:
    """Validate before any launch; return rot_dim. check_rows: the tables must hold positions up to
    pos0 + N - 1 (a packed batch's positions are its sequences' own, bounded by the caller's plan)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be [N, H, Dv] (or [B, N, H, Dv]) attention outputs, got shape {tuple(x.shape)}")
    if x.dtype != torch.bfloat16:
        raise TypeError(f"x must be bfloat16, got {x.dtype}; the in-place RoPE rewrites bf16 rows")
    if isinstance(pos0, bool) or not isinstance(pos0, int) or pos0 < 0:
        raise ValueError(f"pos0 (the first row's position) must be an int >= 0, got {pos0!r}")
    N, Dv = x.shape[-3], x.shape[-1]
    rd = check_tables(cos, sin, pos0 + N if check_rows else 1, x.device)
    if rd > Dv:
        raise ValueError(f"rot_dim = {rd} > the row's channels Dv = {Dv}; RoPE acts on the last rot_dim "
                         f"channels, so use rot_dim <= {Dv}")
    if x.stride(-1) != 1:
        raise ValueError(f"x's channel axis must be contiguous (stride 1), got strides {tuple(x.stride())}; "
                         f"call .contiguous() (the RoPE is in place, so pass the tensor you keep)")
    if x.device.type != "cuda" and not kernels_interpreted(_rope_kernel):
        raise ValueError(f"the Triton RoPE needs CUDA tensors (got {x.device}); on a CPU use "
                         f"kernels_triton.rope.naive.rope_, or set TRITON_INTERPRET=1 for tests")
    return rd


def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos0: int = 0,
                inverse: bool = True, seg: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rotate x[..., -rot_dim:] in place (inverse by default); query row n at table row pos0 + n. Returns x.

    x: [N, H, Dv] or [B, N, H, Dv] bf16 with a contiguous channel axis (row/head strides free);
    cos, sin: fp32 tables [P, rot_dim // 2] by position (tables.fill_tables, or tables.cos_sin of
    any positions with pos0 = 0), shared by every batch element and head. `seg` (a packed batch,
    x [N, H, Dv]): the rows' segment table rows (varlen/naive.py); row n is rotated at its position
    inside its own sequence (the tables must hold the longest sequence's positions)."""
    rd = check_rope_inputs(x, cos, sin, pos0 if seg is None else 0, check_rows=seg is None)
    if x.numel() == 0:
        return x
    if seg is not None and x.dim() != 3:
        raise ValueError(f"a packed batch's rows are [N, H, Dv], got shape {tuple(x.shape)}")
    segs = segments_arg(seg, x.shape[0], x)
    views = [x] if x.dim() == 3 else list(x.unbind(0))
    for v in views:
        N, H, Dv = v.shape
        BLOCK = _block_rows(rd)
        grid = (triton.cdiv(N * H, BLOCK),)
        tab0 = pos0 if seg is None else cos.shape[0] - 1
        _rope_kernel[grid](v, cos, sin, segs, N, tab0, v.stride(0), v.stride(1), Dv - rd,
                           H=H, HALF=rd // 2, HALFP=next_pow2(rd // 2), BLOCK=BLOCK,
                           INVERSE=bool(inverse), VARLEN=seg is not None, num_warps=ROPE_WARPS,
                           enable_fp_fusion=False)
    return x
