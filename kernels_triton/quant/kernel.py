"""Quantisation on Triton: @triton.jit helpers the other kernels fuse, and two small kernels.

Helpers (exact on the GPU and in the interpreter; bit ops and one rounding trick):
  `scale_exponent(amax)`   ceil(log2(amax / qmax)) from the bits of amax (no rounded division)
  `round_to_grid(y)`       the nearest grid value, ties to even: adding and subtracting 1.5 * 2^23 grid
                           spacings at y rounds it (exact for |y| < 2^22 spacings)
  `qdq_blocks(x3)`         quantise-dequantise a [R, NB, QB] tile, blocks along the last axis
  `qdq_rows(y)`            the same on [R, DP] rows: channels [0, QN) in blocks of QB
Kernels:
  `_rows_kernel`   out <- src with the first QN channels of every row quantise-dequantised: the raw
                   `kv` rows' FP8 step fused into the copy the composer makes anyway (kv -> kv_all)
  `_pack_kernel`   index keys or queries -> quantise-dequantise (idempotent on a compressor's output) -> FP8
                   e4m3 values + one fp32 power-of-two scale per row, for the FP8 score kernel (naive.pack_rows;
                   its `.to(float8)` rounds on the GPU only: the interpreter's fp32 -> fp8 cast does not round to
                   nearest even, so there the values are rounded first)

The format enters as constexprs (`format_constexprs`): QMAX, QEXP and QMANT (qmax = (1 + QMANT/2^23)
* 2^QEXP), MANT (mantissa bits), MIN_EXP (smallest normal exponent), AMAX_FLOOR.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._env import kernels_interpreted, next_pow2
from .formats import get, keys_dtype

ROWS_WARPS = 4
ROW_ELEMS = 8192            # elements of one program's [BR, DP] tile
# the packing kernel: one-warp programs of 2,048 elements (an H200, one chunk's idx_q [2,048, 64, 128]: 18.7 us, against
# 24.8 at 512 elements and 19.1-19.4 at 1,024-4,096 with 1-4 warps; benchmarks/results/pack-h200/)
PACK_WARPS = 1
PACK_ELEMS = 2048
MAX_DIM = 4096


def format_constexprs(fmt: str) -> dict:
    """The constexprs of a format for the helpers below."""
    f = get(fmt)
    return dict(QMAX=f.qmax, QEXP=f.qmax_exp, QMANT=f.qmax_mant_bits, MANT=f.mant, MIN_EXP=f.min_exp,
                AMAX_FLOOR=f.amax_floor)


# ---------------------------------------------------------------------------------------
# helpers
@triton.jit
def exp2i(e):
    """2^e as fp32 for int32 e in [-126, 127] (exact; built from the exponent bits)."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def scale_exponent(amax, QEXP: tl.constexpr, QMANT: tl.constexpr):
    """The smallest k with qmax * 2^k >= amax (amax a positive normal fp32): from amax = (1 + f) * 2^e,
    k = e - QEXP, plus 1 when f > qmax's fraction."""
    b = amax.to(tl.int32, bitcast=True)
    return ((b >> 23) & 0xFF) - 127 - QEXP + ((b & 0x7FFFFF) > QMANT).to(tl.int32)


@triton.jit
def round_to_grid(y, MANT: tl.constexpr, MIN_EXP: tl.constexpr):
    """The nearest value of a grid with MANT mantissa bits and normal exponents from MIN_EXP (subnormal
    spacing below), ties to even; |y| at most the grid's largest value."""
    # the spacing at y is 2^(e - MANT), e = max(y's exponent, MIN_EXP); 2^e is y's exponent bits alone (a float
    # op on them, no integer shifts). y + m with m = 1.5 * 2^23 spacings has exactly that spacing as its ulp, so
    # the addition rounds y onto the grid, ties to even, and subtracting m is exact
    p = tl.maximum((y.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True),
                   exp2i(tl.full([], MIN_EXP, tl.int32)))
    m = p * (exp2i(tl.full([], 23 - MANT, tl.int32)) * 1.5)
    r = (y + m) - m
    # a zero keeps the sign of y (-0.0 as a cast gives): y's sign bit or-ed in, which a non-zero r already has
    return (r.to(tl.int32, bitcast=True) | (y.to(tl.int32, bitcast=True) & -2147483648)).to(tl.float32, bitcast=True)


@triton.jit
def qdq_blocks(x3, QMAX: tl.constexpr, QEXP: tl.constexpr, QMANT: tl.constexpr, MANT: tl.constexpr,
               MIN_EXP: tl.constexpr, AMAX_FLOOR: tl.constexpr):
    """Quantise-dequantise every block (the last axis) of x3 [R, NB, QB] fp32: a power-of-two scale
    2^ceil(log2(max(amax, floor) / qmax)), values rounded onto the grid, clamped, scaled back. A block
    with a NaN or an infinity becomes all NaN."""
    ax = tl.abs(x3)
    finite = ax < float("inf")                       # False for NaN too
    bad = tl.max(tl.where(finite, 0, 1), axis=2)
    amax = tl.maximum(tl.max(tl.where(finite, ax, 0.0), axis=2), AMAX_FLOOR)
    k = scale_exponent(amax, QEXP, QMANT)
    z = round_to_grid(x3 * exp2i(-k)[:, :, None], MANT, MIN_EXP)
    z = tl.minimum(tl.maximum(z, -QMAX), QMAX) * exp2i(k)[:, :, None]
    return tl.where(bad[:, :, None] > 0, float("nan"), z)


@triton.jit
def qdq_rows(y, R: tl.constexpr, DP: tl.constexpr, QB: tl.constexpr, QN: tl.constexpr,
             QMAX: tl.constexpr, QEXP: tl.constexpr, QMANT: tl.constexpr, MANT: tl.constexpr,
             MIN_EXP: tl.constexpr, AMAX_FLOOR: tl.constexpr):
    """y [R, DP] fp32 with channels [0, QN) quantise-dequantised in blocks of QB (QN % QB == 0, QB | DP);
    the other channels unchanged."""
    NB: tl.constexpr = DP // QB
    x3 = tl.reshape(y, (R, NB, QB))
    z = qdq_blocks(x3, QMAX, QEXP, QMANT, MANT, MIN_EXP, AMAX_FLOOR)
    in_q = (tl.arange(0, NB) * QB < QN)[None, :, None]
    return tl.reshape(tl.where(in_q, z, x3), (R, DP))


# ---------------------------------------------------------------------------------------
# kernels
@triton.jit
def _rows_kernel(src_ptr, out_ptr, n_rows, rows_per_b, stride_sb, stride_sr, stride_ob, stride_or,
                 D: tl.constexpr, DP: tl.constexpr, BR: tl.constexpr, QB: tl.constexpr, QN: tl.constexpr,
                 QMAX: tl.constexpr, QEXP: tl.constexpr, QMANT: tl.constexpr, MANT: tl.constexpr,
                 MIN_EXP: tl.constexpr, AMAX_FLOOR: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    r_ok = r < n_rows
    bi = (r // rows_per_b).to(tl.int64)
    ri = (r % rows_per_b).to(tl.int64)
    d = tl.arange(0, DP)
    mask = r_ok[:, None] & (d < D)[None, :]
    x = tl.load(src_ptr + (bi * stride_sb + ri * stride_sr)[:, None] + d[None, :], mask=mask, other=0.0,
                eviction_policy="evict_first").to(tl.float32)
    y = qdq_rows(x, BR, DP, QB, QN, QMAX, QEXP, QMANT, MANT, MIN_EXP, AMAX_FLOOR)
    tl.store(out_ptr + (bi * stride_ob + ri * stride_or)[:, None] + d[None, :], y.to(tl.bfloat16), mask=mask)


@triton.jit
def _max_keep_nan(a, b):
    # max.NaN.f32: a block's amax is NaN if any of its values is (plain max.f32 returns the other operand)
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _pack_kernel(k_ptr, k8_ptr, s_ptr, n_rows, D: tl.constexpr, DP: tl.constexpr, BR: tl.constexpr,
                 QB: tl.constexpr, QMAX: tl.constexpr, QEXP: tl.constexpr, QMANT: tl.constexpr,
                 MANT: tl.constexpr, MIN_EXP: tl.constexpr, AMAX_FLOOR: tl.constexpr, CAST_ROUNDS: tl.constexpr):
    # naive.fp8_rows(naive.quant_dequant(x)) in one pass, bit for bit, with the work an element cut to what the
    # values need (15 SASS instructions, 33 as qdq_rows then a second pass for the row's scale; docs/performance.md,
    # "The query packing's instructions"):
    # - no clamp: the block's scale makes |x| / 2^kb <= QMAX, a grid value, and rounding is monotone;
    # - the row's e4m3 scale from the blocks alone: the largest |value| of a block after the step is its amax's
    #   own rounding (monotone again), so the row's amax needs no pass over the elements; that value is also the
    #   one compare a block needs for finiteness (the amax kept NaN by max.NaN): NaN for a block with a NaN or an
    #   infinity, an infinity where the step itself overflows (|x| within 1/8 of fp32's largest rounds up to
    #   2^128). Such a block packs as zeros and its row's scale is NaN (fp8_rows zeroes only the non-finite values
    #   of an overflowing block; no score reads the values of a row whose scale is NaN);
    # - one multiply by 2^(kb - kr) instead of 2^kb then 2^-kr: exact where the exponent is >= -126 (the step's
    #   values have at most 4 significant bits and kb >= -126), and below that both give a value under 2^-100,
    #   which the e4m3 rounding takes to a signed zero either way.
    NB: tl.constexpr = DP // QB
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    r_ok = r < n_rows
    d = tl.arange(0, DP)
    mask = r_ok[:, None] & (d < D)[None, :]
    offs = r.to(tl.int64)[:, None] * D + d[None, :]
    x = tl.reshape(tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32), (BR, NB, QB))
    amax = tl.reduce(tl.abs(x), 2, _max_keep_nan)                   # [BR, NB]; NaN if the block holds one
    kb = scale_exponent(tl.maximum(amax, AMAX_FLOOR), QEXP, QMANT)
    q = round_to_grid(x * exp2i(-kb)[:, :, None], MANT, MIN_EXP)     # the block's grid values, |q| <= QMAX
    # the block's largest |value| after the step (NaN: a NaN or an infinity in the block; inf: the step overflows)
    top = round_to_grid(amax * exp2i(-kb), MANT, MIN_EXP) * exp2i(kb)
    bad = ~(top < float("inf"))
    # formats.E4M3 (qmax 448 = 1.75 * 2^8) and formats.PACK_AMAX_FLOOR, as literals (the interpreter cannot mix
    # constexpr globals into tensor arithmetic)
    kr = scale_exponent(tl.maximum(tl.max(tl.where(bad, 0.0, top), axis=1), 2.0 ** -118), 8, 0x600000)
    mult = exp2i(tl.maximum(kb - kr[:, None], -126))
    v = tl.reshape(tl.where(bad[:, :, None], 0.0, q * mult[:, :, None]), (BR, DP))
    # CAST_ROUNDS (FP8 e4m3 values, on the GPU): the cast rounds onto the e4m3 grid, ties to even, subnormals
    # included; else v is rounded here, and the cast (bf16, or fp32 in the interpreter) is exact
    if not CAST_ROUNDS:
        v = round_to_grid(v, 3, -6)
    tl.store(k8_ptr + offs, v.to(k8_ptr.dtype.element_ty), mask=mask)
    row_bad = tl.max(bad.to(tl.int32), axis=1) > 0
    tl.store(s_ptr + r, tl.where(row_bad, float("nan"), exp2i(kr)), mask=r_ok)


# ---------------------------------------------------------------------------------------
# launchers
def kernel_limits(dim: int, block: int, channels: int) -> str | None:
    """Why the quantisation kernels cannot take these sizes (None when they can)."""
    if dim > MAX_DIM:
        return f"quantised rows of {dim} channels: the Triton quantiser keeps a row in one program (<= {MAX_DIM})"
    if block & (block - 1) or channels % block or channels > dim:
        return (f"quantisation block {block} over {channels} of {dim} channels: the block must be a power of two "
                f"dividing the quantised channels")
    return None


def _rows_tile(dim: int, elems: int = ROW_ELEMS) -> tuple:
    dp = next_pow2(dim)
    return dp, max(1, min(64, elems // dp))


def _check_rows(src: torch.Tensor, out: torch.Tensor, block: int, channels: int) -> None:
    for name, t in (("src", src), ("out", out)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if src.shape != out.shape or src.dim() != 3:
        raise ValueError(f"src and out must be [B, rows, D] of one shape, got {tuple(src.shape)}, {tuple(out.shape)}")
    if src.dtype != torch.bfloat16 or out.dtype != torch.bfloat16:
        raise TypeError(f"the quantising copy takes and writes bfloat16 rows, got {src.dtype} -> {out.dtype}")
    if src.stride(2) != 1 or out.stride(2) != 1:
        raise ValueError("the channel axis of src and out must be contiguous")
    why = kernel_limits(src.shape[2], block, channels)
    if why:
        raise ValueError(why)
    if src.device != out.device or (src.device.type != "cuda" and not kernels_interpreted(_rows_kernel)):
        raise ValueError(f"the Triton quantiser needs src and out on one CUDA device, got {src.device}, {out.device}")


def quant_rows(src: torch.Tensor, out: torch.Tensor, *, fmt: str, block: int, channels: int) -> None:
    """out <- src (bf16 [B, rows, D], any batch / row strides) with channels [0, channels) of every row
    quantise-dequantised in blocks of `block` (naive.quant_rows). One read, one write."""
    _check_rows(src, out, block, channels)
    B, R, D = src.shape
    n = B * R
    if n == 0:
        return
    dp, br = _rows_tile(D)
    _rows_kernel[(triton.cdiv(n, br),)](src, out, n, R, src.stride(0), src.stride(1), out.stride(0),
                                         out.stride(1), D=D, DP=dp, BR=br, QB=block, QN=channels,
                                         num_warps=ROWS_WARPS, **format_constexprs(fmt))


def pack_rows(x: torch.Tensor, x8: torch.Tensor, x_scale: torch.Tensor, *, fmt: str, block: int) -> None:
    """Rows x [..., DI] bf16 (contiguous: the index keys, or a chunk's index queries) -> x8 (e4m3 grid values
    in packed_dtype(fmt)), x_scale fp32 [...] (naive.pack_rows)."""
    D = x.shape[-1]
    n = x.numel() // D if D else 0
    if not x.is_contiguous() or not x8.is_contiguous() or not x_scale.is_contiguous():
        raise ValueError("pack_rows needs contiguous x, x8 and x_scale")
    if tuple(x8.shape) != tuple(x.shape) or tuple(x_scale.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"x8 must be {tuple(x.shape)} and x_scale {tuple(x.shape[:-1])}, got "
                         f"{tuple(x8.shape)}, {tuple(x_scale.shape)}")
    why = kernel_limits(D, block, D)
    if why:
        raise ValueError(why)
    if n == 0:
        return
    dp, br = _rows_tile(D, PACK_ELEMS)
    _pack_kernel[(triton.cdiv(n, br),)](x, x8, x_scale, n, D=D, DP=dp, BR=br, QB=block, num_warps=PACK_WARPS,
                                        CAST_ROUNDS=x8.dtype == torch.float8_e4m3fn and not kernels_interpreted(
                                            _pack_kernel), **format_constexprs(fmt))


def packed_dtype(fmt: str, fp8_mma: bool = False) -> torch.dtype:
    """The dtype of packed rows here: keys_dtype on the GPU, fp32 holding the same values in the
    interpreter (whose FP8 stores do not round)."""
    return torch.float32 if kernels_interpreted(_pack_kernel) else keys_dtype(fmt, fp8_mma)
