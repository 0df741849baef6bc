"""The 1-bit self-index in Triton (docs/semantics.md section 7; naive.py is the reference).

codes: one program per block of rows packs the signs of every channel (1 bit, LSB first, 32 per
int32 word; sign(0) = +1) and writes alpha = mean |K| beside them, in one pass over the rows.
score: the head-summed query qbar (fp32) becomes a fixed-point number per query: u = round(qbar * 2^(21 - e))
with 2^e <= max |qbar| < 2^(e + 1), so |u| <= 2^22, written as three int8 limbs (u = l2 * 2^16 + l1 * 2^8 + l0,
each in [-128, 127]) and the power-of-two scale 2^(e - 21). A program holds 128 queries' limbs in shared
memory (192 KiB) and walks key tiles of 64 rows; it reads a tile's codes as bytes (little-endian words:
channel d is bit d % 8 of byte d // 8) and turns every bit into an int8 +1 / -1, eight channels of one byte
in one thread, and three int8 tensor-core dots give sum_d l_k[d] * sign(K_t)[d] exactly in int32 (int8 runs
at twice the bf16 rate, and the limbs are exact where two bf16 halves of qbar had 16 significant bits). The
score is (D2 * 2^16 + (D1 * 2^8 + D0)) * scale * alpha in fp32: one rounding of the sum, one of the product
with alpha. The next tile's code bytes and alpha are loaded a tile ahead. The key tiles a block of queries
sees are shared out over a second grid axis (program j takes tiles j, j + n1, ...): a chunk of 2,048 queries
is only 16 query blocks, too few for an H200's 132 SMs. Only the key tiles visible to the block's last query
are computed (as the lightning indexer's score kernel), invisible entries are -inf, so the same selection
kernel reads the buffer. A query whose qbar has a NaN or infinite channel gets a NaN scale: NaN against every
row (ranked below every number), never a finite score.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._env import kernels_interpreted, next_pow2
from ..varlen.kernel import segments_arg, visible_tiles
from .cost import LIMBS, WORD

NEG_INF = tl.constexpr(float("-inf"))
CODE_ROWS = 16         # rows per codes program
SCORE_QUERIES = 128    # queries per score program (the dots' M: two warpgroups of 64)
SCORE_ROWS = 64        # key rows per tile (with the queries' three int8 limbs in shared memory: 224 KiB at D = 512)
SCORE_WARPS = 8
# measured on an H200 (benchmarks/results/selfindex-h200/score-int8.json), one chunk of 2,048 queries against
# 65,536 visible rows: two bf16 halves, 64 queries, 4 warps 0.99 ms (0.82 with the tile prefetch); int8 limbs,
# 64 queries 1.17-1.22 ms (4 warps), 1.07 (8 warps, 128-row tiles); 128 queries, 8 warps, prefetch 0.60 ms
SCORE_STAGES = 1
SCORE_PROGRAMS_PER_SM = 1   # resident score programs per SM (shared memory: 224 KiB each)
MAX_KEY_SPLIT = 16
INTERPRET_SLOTS = 4         # the interpreter's "SMs": a query block's tiles split in four
QBAR_HEADS = 16             # heads per load of the head-sum kernel (one program per query)
# H200, 2,048 queries x 64 heads x 512 (128 MiB read): 4 warps 0.062 ms, 2 warps 0.045 (3.0 TB/s), 1 warp 0.045
QBAR_WARPS = 2
FIXED_SHIFT = 21            # u = round(qbar * 2^(FIXED_SHIFT - e)), 2^e <= max |qbar| < 2^(e + 1)
MIN_EXPONENT = -100         # e is clamped here: a row of tiny (or zero) qbar keeps a normal scale
MAX_SCORE_DIM = 512         # channels (padded) whose limbs fit in shared memory beside a sign tile


@triton.jit
def _codes_kernel(rows_ptr, codes_ptr, alpha_ptr, n_rows, stride_r, stride_c,
                  D: tl.constexpr, DP: tl.constexpr, NW: tl.constexpr, BR: tl.constexpr):
    pid = tl.program_id(0)
    r = pid * BR + tl.arange(0, BR)
    r_ok = r < n_rows
    d = tl.arange(0, DP)
    x = tl.load(rows_ptr + r.to(tl.int64)[:, None] * stride_r + d[None, :], mask=r_ok[:, None] & (d < D)[None, :],
                other=0.0).to(tl.float32)
    tl.store(alpha_ptr + r, tl.sum(tl.abs(x), axis=1) / D, mask=r_ok)
    bit = tl.where(x >= 0, 1, 0).to(tl.uint32) << (d % 32).to(tl.uint32)[None, :]
    words = tl.sum(tl.reshape(bit, (BR, NW, 32)), axis=2)          # distinct bits: the sum is an OR
    w = tl.arange(0, NW)
    tl.store(codes_ptr + r.to(tl.int64)[:, None] * stride_c + w[None, :], words.to(tl.int32),
             mask=r_ok[:, None] & (w < D // 32)[None, :])


@triton.jit
def _pow2(e):
    """2^e as fp32 for an int32 e in [-126, 127] (the exponent field written directly: exact)."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _qbar_kernel(q_ptr, limbs_ptr, scale_ptr, stride_q, stride_h, stride_l,
                 H: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BH: tl.constexpr,
                 SHIFT: tl.constexpr, MIN_E: tl.constexpr):
    # qbar of one query = the fp32 sum of its H head rows (one read of q), written as the int8 limbs of
    # u = round(qbar * 2^(SHIFT - e)) (limb k at limbs[row, k * D:(k + 1) * D], most significant first) and
    # the scale 2^(e - SHIFT): qbar = u * scale to within half a step
    r = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, DP)
    h = tl.arange(0, BH)
    acc = tl.zeros([DP], tl.float32)
    for h0 in range(0, H, BH):
        x = tl.load(q_ptr + r * stride_q + (h0 + h)[:, None] * stride_h + d[None, :],
                    mask=(h0 + h < H)[:, None] & (d < D)[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    bad = (acc != acc) | (tl.abs(acc) == float("inf"))
    acc = tl.where(bad, 0.0, acc)
    m = tl.max(tl.abs(acc), axis=0)
    e = tl.maximum(((m.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, MIN_E)   # m in [2^e, 2^(e+1))
    x = acc * _pow2(SHIFT - e)                                     # exact, |x| < 2^(SHIFT + 1) = 2^22
    u = ((x + 12582912.0) - 12582912.0).to(tl.int32)               # + 1.5 * 2^23: round to nearest even
    l0 = ((u + 128) & 255) - 128
    u = (u - l0) >> 8
    l1 = ((u + 128) & 255) - 128
    l2 = (u - l1) >> 8                                             # |l2| <= 2^22 / 2^16 + 1
    row = limbs_ptr + r * stride_l + d
    tl.store(row, l2.to(tl.int8), mask=d < D)
    tl.store(row + D, l1.to(tl.int8), mask=d < D)
    tl.store(row + 2 * D, l0.to(tl.int8), mask=d < D)
    scale = tl.where(tl.max(bad.to(tl.int32), axis=0) > 0, float("nan"), _pow2(e - SHIFT))
    tl.store(scale_ptr + r, scale)


@triton.jit
def _sign_i8(byte, K: tl.constexpr):
    """Bit K of byte (int32) as an int8 +1 (bit 1) or -1 (bit 0)."""
    return ((((byte >> K) & 1) * 2) - 1).to(tl.int8)


@triton.jit
def _code_tile(code_bytes, alpha_ptr, offs_t, t_end, stride_c, g, D: tl.constexpr):
    """A tile's code bytes [BT, NG] (int32) and alpha [BT]; rows past t_end read as 0."""
    ok = offs_t < t_end
    y = tl.load(code_bytes + offs_t.to(tl.int64)[:, None] * (stride_c * 4) + g[None, :],
                mask=ok[:, None] & (g < D // 8)[None, :], other=0).to(tl.int32)
    return y, tl.load(alpha_ptr + offs_t, mask=ok, other=0.0)


@triton.jit
def _score_kernel(limbs_ptr, scale_ptr, codes_ptr, alpha_ptr, out_ptr, seg_ptr, s_first, n_q, T,
                  stride_l, stride_c, stride_o,
                  RATIO: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr,
                  VARLEN: tl.constexpr):
    # DP: D padded to a power of two; the padding channels are zero limbs (they add 0)
    pid = tl.program_id(0)
    q0 = pid * BQ
    offs_q = tl.arange(0, BQ)
    d = tl.arange(0, DP)
    q_ok = q0 + offs_q < n_q
    qrows = limbs_ptr + (q0 + offs_q).to(tl.int64)[:, None] * stride_l + d[None, :]
    qmask = q_ok[:, None] & (d < D)[None, :]
    l2 = tl.load(qrows, mask=qmask, other=0)                               # [BQ, DP] int8 each
    l1 = tl.load(qrows + D, mask=qmask, other=0)
    l0 = tl.load(qrows + 2 * D, mask=qmask, other=0)
    scale = tl.load(scale_ptr + q0 + offs_q, mask=q_ok, other=0.0)
    # the rows each query sees and the tiles the block walks (a packed batch: each query's own sequence's)
    lo, nvis, t_start, t_end = visible_tiles(seg_ptr, s_first, q0, offs_q, q_ok, n_q, T, RATIO, BQ, BT, VARLEN)
    out_rows = out_ptr + (q0 + offs_q).to(tl.int64)[:, None] * stride_o
    NG: tl.constexpr = DP // 8
    g = tl.arange(0, NG)
    code_bytes = codes_ptr.to(tl.pointer_type(tl.uint8))
    step = BT * tl.num_programs(1)
    t_first = t_start + tl.program_id(1) * BT
    y, alpha = _code_tile(code_bytes, alpha_ptr, t_first + tl.arange(0, BT), t_end, stride_c, g, D)
    for t0 in range(t_first, t_end, step):
        offs_t = t0 + tl.arange(0, BT)
        # the next tile's bytes, loaded now so that their latency hides behind this tile's dots
        y_next, alpha_next = _code_tile(code_bytes, alpha_ptr, offs_t + step, t_end, stride_c, g, D)
        # [BT, NG, 2, 2, 2] -> [BT, DP]: element (g, a, b, c) is bit 4a + 2b + c of byte g (join appends
        # its new axis last, inside one thread: the eight signs of a byte stay contiguous)
        even = tl.join(tl.join(_sign_i8(y, 0), _sign_i8(y, 4)), tl.join(_sign_i8(y, 2), _sign_i8(y, 6)))
        odd = tl.join(tl.join(_sign_i8(y, 1), _sign_i8(y, 5)), tl.join(_sign_i8(y, 3), _sign_i8(y, 7)))
        signs = tl.trans(tl.reshape(tl.join(even, odd), (BT, DP)))                    # [DP, BT] int8
        top = tl.dot(l2, signs, out_dtype=tl.int32)                                   # |top| <= 65 * D
        low = tl.dot(l0, signs, tl.dot(l1, signs, out_dtype=tl.int32) * 256, out_dtype=tl.int32)  # < 2^25
        sc = (top.to(tl.float32) * 65536.0 + low.to(tl.float32)) * scale[:, None] * alpha[None, :]
        vis = offs_t[None, :] < nvis[:, None]
        if VARLEN:      # a packed query's own visible rows only, column 0 = its first row (as the indexer's)
            vis = vis & (offs_t[None, :] >= lo[:, None])
            tl.store(out_rows + (offs_t[None, :] - lo[:, None]), sc, mask=q_ok[:, None] & vis)
        else:
            sc = tl.where(vis, sc, NEG_INF)
            tl.store(out_rows + offs_t[None, :], sc, mask=q_ok[:, None] & (offs_t < t_end)[None, :])
        y, alpha = y_next, alpha_next


def check_dim(dim: int) -> None:
    if dim % WORD or dim < WORD:
        raise ValueError(f"the self-index packs 32 channels per word: dim must be a multiple of 32, got {dim}")


def codes_constexprs(dim: int) -> dict:
    """The codes kernel's compile-time arguments (the launcher's and the IR's)."""
    return dict(D=dim, DP=next_pow2(dim), NW=next_pow2(dim // WORD), BR=CODE_ROWS)


def codes(rows: torch.Tensor, codes_out: torch.Tensor, alpha_out: torch.Tensor) -> None:
    """rows [B, T, D] bf16 -> codes_out [B, T, D // 32] int32, alpha_out [B, T] fp32 (naive.codes)."""
    B, T, D = rows.shape
    check_dim(D)
    if T == 0:
        return
    flat, cflat, aflat = rows.reshape(B * T, D), codes_out.view(B * T, D // WORD), alpha_out.view(B * T)
    _codes_kernel[(triton.cdiv(B * T, CODE_ROWS),)](flat, cflat, aflat, B * T, flat.stride(0), cflat.stride(0),
                                                   **codes_constexprs(D))


def qbar_constexprs(heads: int, dim: int) -> dict:
    """The head-sum kernel's compile-time arguments (the launcher's and the IR's)."""
    return dict(H=heads, D=dim, DP=next_pow2(dim), BH=min(QBAR_HEADS, next_pow2(heads)), SHIFT=FIXED_SHIFT,
                MIN_E=MIN_EXPONENT)


def score_constexprs(dim: int, ratio: int, varlen: bool) -> dict:
    """The score kernel's compile-time arguments (the launcher's and the IR's)."""
    return dict(RATIO=ratio, D=dim, DP=next_pow2(dim), BQ=SCORE_QUERIES, BT=SCORE_ROWS, VARLEN=varlen)


def qbar_limbs(q: torch.Tensor):
    """q [n, H, D] bf16 (channels contiguous) -> (limbs [n, LIMBS * D] int8, scale [n] fp32): qbar = sum_h q
    in fp32 as the fixed point u * scale, u = sum_k limbs[:, k * D:(k + 1) * D] * 2^(8 * (LIMBS - 1 - k)),
    in one Triton pass over q (scale NaN for a row with a non-finite channel)."""
    n, H, D = q.shape
    if q.stride(2) != 1:
        raise ValueError("qbar_limbs needs the channel axis of q contiguous")
    limbs = torch.empty(n, LIMBS * D, dtype=torch.int8, device=q.device)
    scale = torch.empty(n, dtype=torch.float32, device=q.device)
    if n:
        _qbar_kernel[(n,)](q, limbs, scale, q.stride(0), q.stride(1), limbs.stride(0), **qbar_constexprs(H, D),
                           num_warps=QBAR_WARPS)
    return limbs, scale


def kernel_limits(dim: int) -> Optional[str]:
    """Why the GPU score kernel cannot take rows of `dim` channels (None when it can); checked before any
    launch or lowering. A program keeps SCORE_QUERIES queries' limbs of next_pow2(dim) channels in shared
    memory (224 KiB at 512 with a sign tile): larger rows do not fit."""
    if next_pow2(dim) > MAX_SCORE_DIM:
        return (f"the self-index score kernel holds {SCORE_QUERIES} queries' int8 limbs of the key dim (padded to a "
                f"power of two) in shared memory: dim <= {MAX_SCORE_DIM} on the GPU, got {dim}")
    return None


def key_split(blocks: int, slots: int) -> int:
    """Programs per query block along the key tiles, for `slots` programs resident at once (SMs x
    SCORE_PROGRAMS_PER_SM): the split in 1..MAX_KEY_SPLIT with the least waves / split (each program walks
    1 / split of the block's tiles; a partly filled last wave costs a whole one), the smallest on a tie.
    A 2,048-query chunk's 16 blocks on 132 slots: 8 (one wave); with 64-query blocks a split of 5 (1.2 waves
    for 32 blocks) had been ~1.6x slower than 4 (one wave) on an H200."""
    return min(range(1, MAX_KEY_SPLIT + 1), key=lambda j: (triton.cdiv(blocks * j, slots) / j, j))


def score_slots(device: torch.device, interpreted: bool) -> int:
    """Score programs resident at once on `device`; in the interpreter INTERPRET_SLOTS (small, so the CPU
    tests walk the split)."""
    if interpreted:
        return INTERPRET_SLOTS
    return SCORE_PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def score_chunk(q: torch.Tensor, codes: torch.Tensor, alpha: torch.Tensor, out: torch.Tensor, *, s_first: int,
                ratio: int, seg: Optional[torch.Tensor] = None) -> None:
    """Scores of queries [s_first, s_first + n) against their visible rows into out[:n, :ld] (fp32), as
    naive.score_chunk: q [n, H, D] bf16, codes [T, D // 32] int32, alpha [T] fp32. `seg`: a packed
    batch's segment rows of the queries (each sees its own sequence's rows)."""
    n, _, D = q.shape
    T = codes.shape[0]
    check_dim(D)
    if n == 0:
        return
    segs = segments_arg(seg, n, out)
    interpreted = kernels_interpreted(_score_kernel)
    why = None if interpreted else kernel_limits(D)
    if why is not None:
        raise ValueError(why)
    limbs, scale = qbar_limbs(q)
    blocks = triton.cdiv(n, SCORE_QUERIES)
    _score_kernel[(blocks, key_split(blocks, score_slots(q.device, interpreted)))](
        limbs, scale, codes, alpha, out, segs, s_first, n, T, limbs.stride(0), codes.stride(0), out.stride(0),
        **score_constexprs(D, ratio, seg is not None), num_warps=SCORE_WARPS, num_stages=SCORE_STAGES)
