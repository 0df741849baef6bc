"""The 1-bit self-index in Triton (docs/semantics.md section 7; naive.py is the reference).

codes: one program per block of rows packs the signs of every channel (1 bit, LSB first, 32 per
int32 word; sign(0) = +1) and writes alpha = mean |K| beside them, in one pass over the rows.
score: the head-summed query qbar (fp32) is split into two bf16 halves, hi + lo (hi = bf16(qbar),
lo = bf16(qbar - hi): 16 significant bits together). A program holds 64 queries' halves in shared memory
and walks key tiles of 64 rows; it reads a tile's codes as bytes (little-endian words: channel d is bit
d % 8 of byte d // 8) and turns every bit into a bf16 +1 / -1 with integer ops (the bit moved to the sign
of 0xBF80), eight channels of one byte in one thread, so the tile goes to shared memory in 16-byte
stores; two tensor-core dots (hi, lo) give qbar . sign(K), scaled by alpha. The key tiles a block of
queries sees are shared out over a second grid axis (program j takes tiles j, j + n1, ...): a chunk of
2,048 queries is only 32 query blocks, too few for an H200's 132 SMs. Only the key tiles visible to the
block's last query are computed (as the lightning indexer's score kernel), invisible entries are -inf,
so the same selection kernel reads the buffer.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._env import kernels_interpreted, next_pow2
from ..varlen.kernel import segments_arg, visible_tiles
from .cost import WORD

NEG_INF = tl.constexpr(float("-inf"))
CODE_ROWS = 16         # rows per codes program
SCORE_QUERIES = 64     # queries per score program (the dot's M)
SCORE_ROWS = 64        # key rows per tile (with qbar's two bf16 halves in shared memory: 196 KiB at D = 512)
SCORE_WARPS = 4
# measured on an H200 (benchmarks/results/selfindex-h200/score-variants.json), one chunk of 2,048 queries
# against 32,768 visible rows: 1 stage 0.497 ms, 2 stages 0.515; 8 warps 0.772
SCORE_STAGES = 1
SCORE_PROGRAMS_PER_SM = 1   # resident score programs per SM (shared memory: 196 KiB each)
MAX_KEY_SPLIT = 16
INTERPRET_SLOTS = 4         # the interpreter's "SMs": two query blocks split in two, one in four
QBAR_HEADS = 16             # heads per load of the head-sum kernel (one program per query)


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
def _qbar_kernel(q_ptr, hi_ptr, lo_ptr, stride_q, stride_h, stride_o,
                 H: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BH: tl.constexpr):
    # qbar of one query = the fp32 sum of its H head rows, written as bf16 hi + lo (one read of q)
    r = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, DP)
    h = tl.arange(0, BH)
    acc = tl.zeros([DP], tl.float32)
    for h0 in range(0, H, BH):
        x = tl.load(q_ptr + r * stride_q + (h0 + h)[:, None] * stride_h + d[None, :],
                    mask=(h0 + h < H)[:, None] & (d < D)[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    hi = acc.to(tl.bfloat16)
    tl.store(hi_ptr + r * stride_o + d, hi, mask=d < D)
    tl.store(lo_ptr + r * stride_o + d, (acc - hi.to(tl.float32)).to(tl.bfloat16), mask=d < D)


@triton.jit
def _sign_bf16(byte, K: tl.constexpr):
    """Bit K of byte (int32) as a bf16 +1 (bit 1) or -1 (bit 0): the bit moved to bit 15 flips the sign of
    -1.0 (0xBF80); integer ops only (an int -> float conversion runs at a quarter of the ALU rate)."""
    return ((((byte << (15 - K)) & 0x8000) ^ 0xBF80).to(tl.int16)).to(tl.bfloat16, bitcast=True)


@triton.jit
def _score_kernel(qh_ptr, ql_ptr, codes_ptr, alpha_ptr, out_ptr, seg_ptr, s_first, n_q, T,
                  stride_q, stride_c, stride_o,
                  RATIO: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr,
                  IEEE: tl.constexpr, VARLEN: tl.constexpr):
    # DP: D padded to a power of two; the padding channels are zero queries (they add 0)
    pid = tl.program_id(0)
    q0 = pid * BQ
    offs_q = tl.arange(0, BQ)
    d = tl.arange(0, DP)
    q_ok = q0 + offs_q < n_q
    qrows = (q0 + offs_q).to(tl.int64)[:, None] * stride_q + d[None, :]
    qmask = q_ok[:, None] & (d < D)[None, :]
    qh = tl.load(qh_ptr + qrows, mask=qmask, other=0.0)                   # [BQ, DP]
    ql = tl.load(ql_ptr + qrows, mask=qmask, other=0.0)
    # the rows each query sees and the tiles the block walks (a packed batch: each query's own sequence's)
    lo, nvis, t_start, t_end = visible_tiles(seg_ptr, s_first, q0, offs_q, q_ok, n_q, T, RATIO, BQ, BT, VARLEN)
    out_rows = out_ptr + (q0 + offs_q).to(tl.int64)[:, None] * stride_o
    NG: tl.constexpr = DP // 8
    g = tl.arange(0, NG)
    code_bytes = codes_ptr.to(tl.pointer_type(tl.uint8))
    split = tl.num_programs(1)
    for t0 in range(t_start + tl.program_id(1) * BT, t_end, BT * split):
        offs_t = t0 + tl.arange(0, BT)
        t_ok = offs_t < T
        y = tl.load(code_bytes + offs_t.to(tl.int64)[:, None] * (stride_c * 4) + g[None, :],
                    mask=t_ok[:, None] & (g < D // 8)[None, :], other=0).to(tl.int32)      # [BT, NG] bytes
        # [BT, NG, 2, 2, 2] -> [BT, DP]: element (g, a, b, c) is bit 4a + 2b + c of byte g (join appends
        # its new axis last, inside one thread: the eight signs of a byte stay contiguous)
        even = tl.join(tl.join(_sign_bf16(y, 0), _sign_bf16(y, 4)), tl.join(_sign_bf16(y, 2), _sign_bf16(y, 6)))
        odd = tl.join(tl.join(_sign_bf16(y, 1), _sign_bf16(y, 5)), tl.join(_sign_bf16(y, 3), _sign_bf16(y, 7)))
        signs = tl.trans(tl.reshape(tl.join(even, odd), (BT, DP)).to(qh.dtype))          # [DP, BT]
        if IEEE:
            dot = tl.dot(qh, signs, input_precision="ieee")
            dot = tl.dot(ql, signs, dot, input_precision="ieee")
        else:
            dot = tl.dot(qh, signs)                                             # fp32 accumulation
            dot = tl.dot(ql, signs, dot)
        alpha = tl.load(alpha_ptr + offs_t, mask=t_ok, other=0.0)
        sc = dot * alpha[None, :]
        vis = offs_t[None, :] < nvis[:, None]
        if VARLEN:      # a packed query's own visible rows only, column 0 = its first row (as the indexer's)
            vis = vis & (offs_t[None, :] >= lo[:, None])
            tl.store(out_rows + (offs_t[None, :] - lo[:, None]), sc, mask=q_ok[:, None] & vis)
        else:
            sc = tl.where(vis, sc, NEG_INF)
            tl.store(out_rows + offs_t[None, :], sc, mask=q_ok[:, None] & (offs_t < t_end)[None, :])


def check_dim(dim: int) -> None:
    if dim % WORD or dim < WORD:
        raise ValueError(f"the self-index packs 32 channels per word: dim must be a multiple of 32, got {dim}")


def codes(rows: torch.Tensor, codes_out: torch.Tensor, alpha_out: torch.Tensor) -> None:
    """rows [B, T, D] bf16 -> codes_out [B, T, D // 32] int32, alpha_out [B, T] fp32 (naive.codes)."""
    B, T, D = rows.shape
    check_dim(D)
    if T == 0:
        return
    flat, cflat, aflat = rows.reshape(B * T, D), codes_out.view(B * T, D // WORD), alpha_out.view(B * T)
    _codes_kernel[(triton.cdiv(B * T, CODE_ROWS),)](flat, cflat, aflat, B * T, flat.stride(0), cflat.stride(0),
                                                   D=D, DP=next_pow2(D), NW=next_pow2(D // WORD), BR=CODE_ROWS)


def split_qbar(q: torch.Tensor):
    """q [n, H, D] bf16 (channels contiguous) -> (hi, lo) [n, D] bf16: qbar = sum_h q in fp32 as hi = bf16(qbar),
    lo = bf16(qbar - hi), in one Triton pass over q (no fp32 temporaries; a torch sum, cast and difference
    are four launches and two fp32 [n, D] buffers)."""
    n, H, D = q.shape
    if q.stride(2) != 1:
        raise ValueError("split_qbar needs the channel axis of q contiguous")
    hi = torch.empty(n, D, dtype=torch.bfloat16, device=q.device)
    lo = torch.empty_like(hi)
    if n:
        _qbar_kernel[(n,)](q, hi, lo, q.stride(0), q.stride(1), hi.stride(0), H=H, D=D, DP=next_pow2(D),
                           BH=min(QBAR_HEADS, next_pow2(H)))
    return hi, lo


def key_split(blocks: int, slots: int) -> int:
    """Programs per query block along the key tiles, for `slots` programs resident at once (SMs x
    SCORE_PROGRAMS_PER_SM): the split in 1..MAX_KEY_SPLIT with the least waves / split (each program walks
    1 / split of the block's tiles; a partly filled last wave costs a whole one), the smallest on a tie.
    32 blocks on 132 slots: 4 (one wave). A split of 5 had been 1.2 waves and ~1.6x slower (H200)."""
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
    hi, lo = split_qbar(q)
    ieee = kernels_interpreted(_score_kernel)
    if ieee:   # the interpreter's tl.dot is wrong on bf16 operands: fp32 carries the same values
        hi, lo = hi.float(), lo.float()
    blocks = triton.cdiv(n, SCORE_QUERIES)
    _score_kernel[(blocks, key_split(blocks, score_slots(q.device, ieee)))](
        hi, lo, codes, alpha, out, segs, s_first, n, T, hi.stride(0),
        codes.stride(0), out.stride(0), RATIO=ratio, D=D, DP=next_pow2(D), BQ=SCORE_QUERIES, BT=SCORE_ROWS,
        IEEE=ieee, VARLEN=seg is not None, num_warps=SCORE_WARPS, num_stages=SCORE_STAGES)
