"""Lightning indexer on Triton: fused score kernel + partial top-k selection.

Per query chunk (rows [s_first, s_first + n)):

1. `_score_kernel` computes score[s, t] = sum_h w[s,h] * ReLU(q[s,h,:] . k[t,:]) on
   tensor cores. Keys sit on the MMA's M axis and (query, head) pairs on N, so the
   ReLU-weighted head sum stays inside a thread and its quad (no cross-warp
   reduction). Each program owns BQ queries and loops only over the key tiles some
   of them can see (t < (s+1)//m): invisible tiles are neither computed nor
   written; the diagonal tiles are masked in-kernel from indices. fp32 scores of
   visible tiles go to a bounded [n, ld] chunk buffer: never [S, T].

2. `_select_kernel` writes each query's key list: the sliding-window ids, then the K
   largest visible scores' row ids (ties to the smaller index, -1 padded):
   - pass 1 keeps the running max of P = CAP strided groups (element i joins group
     i % P). The K-th largest group max tau is a LOWER bound of the row's K-th largest
     value (those K maxima are K distinct elements >= tau), so {x >= tau} holds the
     top K; for i.i.d. scores about P*ln2 = 1.4K elements, whatever the row length
     (tau is bisected over key values to within 2^TAU_SLACK keys below it only: still a lower bound);
   - pass 2 compacts those candidates' columns in index order (per warp: the row is cut into 4 segments);
   - the K-th largest key among them is found by bisecting the key values between tau and the largest
     candidate (a count a step, no sort), then everything above it and the first ties in index order are
     written.
   Rows of <= CAP visible entries skip the passes. If more than CAP values tie above
   tau (adversarial input), the same bisection streams over the whole row (log2 of the
   row's range of keys, and three more passes): slow but always right. Two reads of the visible scores in all.
   (Measured: writing group maxima from the score kernel to skip pass 1 cost the score
   kernel more than it saved: keys are on the MMA's M axis, so any max over keys
   crosses warps. See docs/performance.md.)

Non-finite values (docs/semantics.md section 9): the ReLU keeps NaN, so a NaN operand gives
a NaN score, and the selection's order keys rank NaN below every number. Heads and index
dims that are not powers of two are padded inside the score kernel (masked loads: zero
queries, keys and weights add exactly 0), so any 1 <= HI, DI <= 256 runs.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._bits import BF16X2_ROUND_PTX, BF16X2_TERMS_PTX, round_bf16
from .._env import kernels_interpreted, next_pow2
from .._window import store_window, window_pow2
from ..varlen.kernel import load_token_segments, segments_arg, visible_tiles, warp_uniform
from .cost import SCORE_TILE_KEYS, SELECT_PER_THREAD, candidate_slots, select_capacity, select_segments
from .score_gluon import gluon_walk_fits, score_chunk_gluon, tma_ready

NEG_INF = tl.constexpr(float("-inf"))
UINT32_MAX = tl.constexpr(0xFFFFFFFF)
INT32_MIN = tl.constexpr(-2147483648)


# ---------------------------------------------------------------------------------------
# stores shared by both kernels
@triton.jit
def _store_where(ptrs, values, mask, EMULATE: tl.constexpr):
    """tl.store(ptrs, values, mask) of 32-bit values (fp32 or int32), in the layout the values already have.
    tl.store lets Triton's coalescing pass pick another layout and convert the pointers, values and mask to it
    through shared memory, barriers included, at every call; one predicated st.global per element does not.
    The selection's scattered candidate slots (no two contiguous) need it, and so do the quantised score
    kernels' tiles, unpacked and packed: there the MMA layout leaves each (key, query) sum in the 4 lanes of a
    quad, which then store the same value to the same address in one instruction (one 32-byte sector for a
    warp's 8 keys of a query) instead of trading it through shared memory with two barriers a tile (v4-flash's
    last 2,048-query chunk at 262,144: 2.28 -> 2.12 ms, docs/performance.md). The interpreter, which runs no
    PTX, takes tl.store."""
    if EMULATE:
        tl.store(ptrs, values, mask=mask)
    else:
        tl.inline_asm_elementwise("{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.b32 $0, 0; }",
                                  "=r,l,r,r", [ptrs, values.to(tl.int32, bitcast=True), mask.to(tl.int32)],
                                  dtype=tl.int32, is_pure=False, pack=1)


# ---------------------------------------------------------------------------------------
# score kernel
@triton.jit
def _round_bf16(x, EMULATE: tl.constexpr):
    """fp32 x rounded to the nearest bf16 (ties to even; NaN kept), as fp32: two values an instruction on the GPU
    (_bits.BF16X2_ROUND_PTX), the bits' integer rounding in the interpreter (whose cast truncates)."""
    if EMULATE:
        return round_bf16(x)
    else:
        return tl.inline_asm_elementwise(BF16X2_ROUND_PTX, "=r,=r,r,r", [x], dtype=tl.float32, is_pure=True, pack=2)


@triton.jit
def _relu_times_bf16(d, w_b, EMULATE: tl.constexpr):
    """The official score's term of each fp32 dot d: bf16(ReLU(bf16(d)) * w), w_b the weights as bf16 ([1, N]),
    as fp32; NaN kept (docs/semantics.md section 9). On the GPU two terms at a time in bf16x2 arithmetic
    (_bits.BF16X2_TERMS_PTX: 7 instructions for two terms, where rounding in fp32 twice took 12)."""
    if EMULATE:
        r = tl.maximum(_round_bf16(d, EMULATE), 0.0, propagate_nan=tl.PropagateNan.ALL)
        return _round_bf16(r * w_b.to(tl.float32), EMULATE)
    else:
        return tl.inline_asm_elementwise(BF16X2_TERMS_PTX, "=r,=r,r,r,r", [d, w_b], dtype=tl.float32, is_pure=True,
                                         pack=2)


@triton.jit
def _score_kernel(q_ptr, qs_ptr, w_ptr, k_ptr, ks_ptr, out_ptr, seg_ptr,
                  s_first, n_q, T,
                  stride_qs, stride_ws, stride_kt, stride_os,
                  RATIO: tl.constexpr, HI: tl.constexpr, DI: tl.constexpr,
                  HP: tl.constexpr, DP: tl.constexpr,
                  BQ: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr,
                  QUANT: tl.constexpr, OPERAND: tl.constexpr, VARLEN: tl.constexpr, EMULATE: tl.constexpr,
                  ROUND: tl.constexpr):
    # HP, DP: heads and dims padded to powers of two inside the kernel (masked loads give
    # zero queries, keys and weights there, which add exactly 0 to every score).
    # QUANT: both operands come packed by quant.kernel.pack_rows (the official quantise-dequantise
    # step, then e4m3 grid values times a power-of-two scale): q as values [n, HI, DI] and one scale
    # per (query, head) in qs, the keys as values k and one scale per row in ks. OPERAND: the dtype
    # the MMA multiplies those values in (all exact): 2 FP8 e4m3 (an FP8 wgmma), 1 bf16, 0 fp32 (the
    # interpreter). The scales are positive powers of two, so they leave the MMA and the ReLU:
    # q's scale multiplies the head weight once per program, the key's the head sum of its row.
    # (q was once quantised here, in each program's prologue: 256 fp32 values a thread for the block
    # maxima spilled 6.8 KB a thread and took ~16k instructions a program; packing it once per chunk
    # instead took v4-flash at 262,144 from 271.6 to 247.0 ms, docs/performance.md.)
    # ROUND: the official code's bf16 score (Indexer.score_rounding "bf16", naive.indexer_scores): the weight is
    # rounded to bf16 first, then each head's dot, each weighted term and the head sum (_score_tiles).
    pid = tl.program_id(0)
    q0 = pid * BQ
    N: tl.constexpr = BQ * HP
    offs_n = tl.arange(0, N)
    qi = offs_n // HP
    hi = offs_n % HP
    offs_d = tl.arange(0, DP)
    d_ok = offs_d < DI
    qrow = q0 + qi
    # the padding masks exist only when there is padding (constexpr branches): an always-true
    # channel mask on the key tiles would cost their vectorised, software-pipelined loads
    if HP == HI:
        qvalid = qrow < n_q
    else:
        qvalid = (qrow < n_q) & (hi < HI)
    # q^T as [DP, N]: loaded once, reused for every key tile
    q_ptrs = q_ptr + qrow.to(tl.int64)[None, :] * stride_qs + hi[None, :] * DI + offs_d[:, None]
    if DP == DI:
        qT = tl.load(q_ptrs, mask=qvalid[None, :], other=0.0)
    else:
        qT = tl.load(q_ptrs, mask=qvalid[None, :] & d_ok[:, None], other=0.0)
    w = tl.load(w_ptr + qrow.to(tl.int64) * stride_ws + hi, mask=qvalid, other=0.0).to(tl.float32)
    if ROUND:
        w = _round_bf16(w, EMULATE)
    if QUANT:
        # ReLU(x * s) * w = ReLU(x) * (w * s) for s > 0 (a NaN scale, a non-finite row, gives NaN scores);
        # padded heads: scale 1, weight 0
        w = w * tl.load(qs_ptr + qrow.to(tl.int64) * HI + hi, mask=qvalid, other=1.0)
        if OPERAND == 2:
            qT = qT.to(tl.float8e4nv)                   # exact: the values are on the e4m3 grid
        elif OPERAND == 1:
            qT = qT.to(tl.bfloat16)                     # exact: 4 significant bits

    offs_bq = tl.arange(0, BQ)
    q_ok = q0 + offs_bq < n_q
    # the rows each query sees and the tiles the block walks (a packed batch: each query's own sequence's)
    lo, nvis, t_start, t_end = visible_tiles(seg_ptr, s_first, q0, offs_bq, q_ok, n_q, T, RATIO, BQ, BT, VARLEN)
    out_rows = out_ptr + (q0 + offs_bq).to(tl.int64)[None, :] * stride_os
    if VARLEN:
        # a packed query's row holds its own sequence's visible rows only, from column 0 = its first row lo
        # (so the selection reads every row from its start, with no per-row base): row t goes to column t - lo.
        # A block inside one sequence (all but the few that straddle a boundary) has one lo: its walk keeps
        # it scalar, as few registers as the unpacked walk's (a per-query lo spilled under the register cap).
        lo_min = tl.min(lo, axis=0)
        # the block's tile range comes from loaded segment rows: marked warp-uniform, so that the walk's loop
        # and what it carries stay in uniform registers as the unpacked walk's do (packed last 2,048-query
        # chunk of 4 x 65,536: 0.56 -> 0.53 ms with the direct store below; the unpacked one 0.52)
        t_start = warp_uniform(t_start, EMULATE)
        t_end = warp_uniform(t_end, EMULATE)
        if lo_min == tl.max(tl.where(q_ok, lo, lo_min), axis=0):
            _score_tiles(qT, w, k_ptr, ks_ptr, out_rows - lo_min, q_ok, lo_min, nvis, t_start, t_end, T, stride_kt,
                         offs_d, d_ok, BT, BQ, HP, DP, DI, IEEE, QUANT, 1, EMULATE, ROUND)
        else:
            _score_tiles(qT, w, k_ptr, ks_ptr, out_rows - lo[None, :], q_ok, lo, nvis, t_start, t_end, T, stride_kt,
                         offs_d, d_ok, BT, BQ, HP, DP, DI, IEEE, QUANT, 2, EMULATE, ROUND)
    else:
        _score_tiles(qT, w, k_ptr, ks_ptr, out_rows, q_ok, 0, nvis, t_start, t_end, T, stride_kt, offs_d, d_ok, BT, BQ,
                     HP, DP, DI, IEEE, QUANT, 0, EMULATE, ROUND)


@triton.jit
def _score_tiles(qT, w, k_ptr, ks_ptr, out_rows, q_ok, lo, nvis, t_start, t_end, T, stride_kt, offs_d, d_ok,
                 BT: tl.constexpr, BQ: tl.constexpr, HP: tl.constexpr, DP: tl.constexpr, DI: tl.constexpr,
                 IEEE: tl.constexpr, QUANT: tl.constexpr, ROWS: tl.constexpr, EMULATE: tl.constexpr,
                 ROUND: tl.constexpr):
    """The key-tile walk of one score program: tiles [t_start, t_end), query i's visible rows [lo_i, nvis_i)
    (q_ok false and nvis 0 for padding queries), stored at out_rows + t. ROWS says how a row is laid out:
    0 unpacked, column t, -inf past nvis_i up to t_end; 1 packed with one lo for the block (a scalar);
    2 packed with a lo per query; packed rows store their visible columns only (out_rows shifted by -lo).
    ROUND: the bf16 score (w already rounded to bf16, times q's scale)."""
    if QUANT:   # the key scales of the first tile; later tiles' are fetched one iteration ahead
        ks_next = tl.load(ks_ptr + t_start + tl.arange(0, BT), mask=t_start + tl.arange(0, BT) < T, other=0.0)
    if ROWS == 2:
        # t visible iff 0 <= t - lo < span: one unsigned compare (span 0 for padding queries: nvis 0, lo T)
        span = tl.where(nvis > lo, nvis - lo, 0).to(tl.uint32)[None, :]
    if ROUND:   # the weights as bf16 (exact: bf16 values times a power of two), the operand of the bf16 product
        w_b = w.to(tl.bfloat16)[None, :]
    for t0 in range(t_start, t_end, BT):
        offs_t = t0 + tl.arange(0, BT)
        k_ptrs = k_ptr + offs_t.to(tl.int64)[:, None] * stride_kt + offs_d[None, :]
        if DP == DI:
            kt = tl.load(k_ptrs, mask=(offs_t < T)[:, None], other=0.0)
        else:
            kt = tl.load(k_ptrs, mask=(offs_t < T)[:, None] & d_ok[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(kt, qT, input_precision="ieee")
        else:
            acc = tl.dot(kt, qT)                        # [BT, N] fp32 on tensor cores
        if QUANT:
            # a small load issued a tile ahead: its latency hides behind this tile's MMA and epilogue
            k_scale = ks_next
            ks_next = tl.load(ks_ptr + BT + offs_t, mask=BT + offs_t < T, other=0.0)
        if ROUND:
            # the official bf16 score. The scales are powers of two, so rounding the dot of the packed values
            # and scaling it afterwards (q's in w, the key's after the head sum) is rounding the dot of the
            # dequantised values, wherever no value leaves bf16's normal range (docs/semantics.md)
            acc = _relu_times_bf16(acc, w_b, EMULATE)
        else:
            # ReLU that keeps NaN (a NaN operand must give a NaN score, which then ranks last):
            # plain tl.maximum is max.f32 on the GPU, which returns the non-NaN operand
            acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
        sc = tl.sum(tl.reshape(acc, (BT, BQ, HP)), axis=2)   # head sum: within a thread + quad
        if ROUND:
            sc = _round_bf16(sc, EMULATE)
        if QUANT:
            sc = sc * k_scale[:, None]                  # exact: a power of two (NaN for a non-finite key)
        vis = offs_t[:, None] < nvis[None, :]           # causal mask from indices (diagonal tiles)
        ptrs = out_rows + offs_t[:, None]
        if ROWS == 0:
            vals = tl.where(vis, sc, NEG_INF)
            keep = (offs_t < t_end)[:, None] & q_ok[None, :]
        elif ROWS == 1:     # a block inside one sequence: its visible columns only
            vals = sc
            keep = vis & (offs_t >= lo)[:, None]
        else:               # a block across a boundary
            vals = sc
            keep = (offs_t[:, None] - lo[None, :]).to(tl.uint32) < span
        # the quantised kernels (v4's FP8 MMA, v3.2's FP8-step values as bf16) store from the MMA layout;
        # the plain bf16 kernel keeps tl.store, which measured faster there (H200, last 2,048-query chunk
        # at 262,144: 3.41 against 3.75 ms; the FP8 one 2.28 against 2.12; benchmarks/results/score-store-h200/)
        if QUANT:
            _store_where(ptrs, vals, keep, EMULATE)
        else:
            tl.store(ptrs, vals, mask=keep)


# ---------------------------------------------------------------------------------------
# selection kernel
@triton.jit
def _order_key(x):
    # fp32 -> int32 whose signed order is the float order (-0.0 folded onto +0.0 first); NaN
    # gets the smallest key, so a NaN score ranks below every number (naive.order_key)
    x = x + 0.0
    b = x.to(tl.int32, bitcast=True)
    return tl.where(x != x, INT32_MIN, tl.where(b >= 0, b, b ^ 0x7FFFFFFF))


@triton.jit
def _max_nan_last(a, b, EMULATE: tl.constexpr):
    # the larger of a and b with NaN below every number (the order of _order_key): NaN only
    # when both are. On the GPU that is tl.maximum itself (maxnum: max.f32 returns the non-NaN
    # operand); the interpreter's maximum propagates NaN, so there it is written out.
    if EMULATE:
        return tl.where((b > a) | (a != a), b, a)
    else:
        return tl.maximum(a, b)


@triton.jit
def _rank_key(x):
    # the order key as uint32 (signed order moved to unsigned: NaN 0, +inf 2^32 - 2^23): 32-bit compares below
    return (_order_key(x) ^ INT32_MIN).to(tl.uint32, bitcast=True)


@triton.jit
def _kth_largest_key(u, has, k, lo, hi, SLACK: tl.constexpr):
    # u: uint32 rank keys, `has` the ones that count; the k-th largest of them is known to lie in [lo, hi] (at
    # least k counted keys are >= lo, fewer than k are > hi). Bisect that range of key values, one count a step,
    # down to fewer than 2^SLACK keys or to a probe with exactly k keys at or above it, then take the smallest key
    # at or above the bound: a key <= the k-th largest and less than 2^SLACK below it, the k-th largest itself at
    # SLACK 0. No sort. (Bisecting the keys' bits from the highest one where lo and hi differ took every bit below
    # it: all of them where the range crosses zero or 2.0, as V3.2's group maxima of both signs do; over the
    # values it takes at most log2(hi - lo) - SLACK rounds, and the exact count ends it once the probes fall
    # between the k-th and the next key, about log2 of the keys in the range: docs/performance.md, "The
    # selection's bisections over key values".)
    a = lo
    b = hi
    n = k + 1                                        # the count at a, known only once a probe moved it
    while (((b - a) >> SLACK) > 0) & (n != k):
        mid = _probe_between(a, b)
        a, b, n = _bisect_step(a, b, n, mid, tl.sum(((u >= mid) & has).to(tl.int32), axis=0), k)
    return tl.min(tl.where((u >= a) & has, u, UINT32_MAX), axis=0)


@triton.jit
def _probe_between(a, b):
    # the bisections' next probe: a key in (a, b]
    return a + ((b - a) >> 1) + 1


@triton.jit
def _bisect_step(a, b, n, mid, c, k):
    # one bisection step: c keys are >= the probe mid; the k-th largest key stays in [a, b], n counting the keys >= a
    return tl.where(c >= k, mid, a), tl.where(c >= k, b, mid - 1), tl.where(c >= k, c, n)


@triton.jit
def _sums_and_range(a_s, a_q, a_lo, a_hi, b_s, b_q, b_lo, b_hi):
    return a_s + b_s, a_q + b_q, tl.minimum(a_lo, b_lo), tl.maximum(a_hi, b_hi)


@triton.jit
def _add_pair(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _threshold_range(gm, u, k, CAP: tl.constexpr):
    # [lo, hi], a range of keys known to hold the k-th largest of the CAP group maxima (their keys u), where
    # _kth_largest_key starts. The k-th largest of 2k maxima is about their median, and a Gumbel's median lies
    # within 0.2 of a standard deviation of its mean; so the guess is mean -/+ std / 2, checked by one count each
    # way (at least k keys >= lo, fewer than k > hi), else the smallest and the largest key. Where the scores take
    # both signs the bisection takes 19 rounds from those two and about 10 from the guess, unless the guess's
    # range crosses zero too (the values near zero hold half of the keys). Non-finite maxima make the guess NaN
    # (key 0) or infinite: checked all the same. Two reductions, as the smallest and the largest key alone took.
    s1, s2, lo_all, hi_all = tl.reduce((gm, gm * gm, u, u), 0, _sums_and_range)
    mean = s1 / CAP
    half = tl.sqrt(tl.maximum(s2 / CAP - mean * mean, 0.0)) * 0.5
    lo = _rank_key(mean - half)
    hi = _rank_key(mean + half)
    n_lo, n_hi = tl.reduce(((u >= lo).to(tl.int32), (u > hi).to(tl.int32)), 0, _add_pair)
    ok = (n_lo >= k) & (n_hi < k)
    return tl.where(ok, lo, lo_all), tl.where(ok, hi, hi_all)


@triton.jit
def _write_topk(u, has, idx, k, orow, idx_offset, lo, hi):
    # The k largest of u (candidates in index order, `has` the real ones), ties to the smaller index: all above
    # the k-th key, then the first ties in index order. Output order is free. [lo, hi]: keys known to hold the
    # k-th largest (_kth_largest_key's range).
    v = _kth_largest_key(u, has, k, lo, hi, 0)
    gt = (u > v) & has
    need = k - tl.sum(gt.to(tl.int32), axis=0)
    eq = (u == v) & has
    take = gt | (eq & (tl.cumsum(eq.to(tl.int32), axis=0) <= need))
    slot = tl.cumsum(take.to(tl.int32), axis=0) - 1
    tl.store(orow + slot, idx + idx_offset, mask=take)


@triton.jit
def _key_value(key):
    # the float whose order key (_order_key) is `key`, for any key but INT32_MIN (NaN's)
    return tl.where(key >= 0, key, key ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)


# Pass 2's compaction of one tile by warp votes (_compact_tile's GPU form, where a lane holds 4 consecutive columns):
# $4-$7 the lane's scores, $8-$11 their columns, $12 tau's value, $16 L, $20 the segment's count so far, $24 CAP,
# $28 the segment's first slot; $0-$3 the count after the tile. The keep predicates p0-p3 are _compact_tile's. One
# vote skips the rest where no lane of the warp keeps a column (1-2 % of a row are candidates, so many tiles
# keep none). Else a lane's first slot is the count plus the columns kept by the lanes below it: a ballot for each
# of a lane's 4 columns, masked by %lanemask_lt; the lanes hold their columns in lane order, so the slots keep
# index order. The lane's own columns then follow in order. A tile that takes the count past CAP is counted and not
# stored: the row then takes the exact walk. This replaces a warp scan (5 shuffles and their selects a tile) and
# the address of every column, kept or not: docs/performance.md "Pass 2 by warp votes".
COMPACT_BY_VOTES_PTX = tl.constexpr(
    "{ .reg .pred p0, p1, p2, p3, q, any; .reg .b32 b0, b1, b2, b3, lt, t, r, n; .reg .b64 a; "
    "setp.lt.s32 q, $8, $16; setp.ge.and.f32 p0, $4, $12, q; "
    "setp.lt.s32 q, $9, $16; setp.ge.and.f32 p1, $5, $12, q; "
    "setp.lt.s32 q, $10, $16; setp.ge.and.f32 p2, $6, $12, q; "
    "setp.lt.s32 q, $11, $16; setp.ge.and.f32 p3, $7, $12, q; "
    "or.pred any, p0, p1; or.pred any, any, p2; or.pred any, any, p3; "
    "vote.sync.any.pred any, any, -1; mov.b32 $0, $20; @!any bra.uni DONE; "
    "mov.b32 lt, %lanemask_lt; "
    "vote.sync.ballot.b32 b0, p0, -1; vote.sync.ballot.b32 b1, p1, -1; "
    "vote.sync.ballot.b32 b2, p2, -1; vote.sync.ballot.b32 b3, p3, -1; "
    "popc.b32 n, b0; add.s32 $0, $0, n; popc.b32 n, b1; add.s32 $0, $0, n; "
    "popc.b32 n, b2; add.s32 $0, $0, n; popc.b32 n, b3; add.s32 $0, $0, n; "
    "setp.gt.s32 q, $0, $24; @q bra.uni DONE; "
    "and.b32 t, b0, lt; popc.b32 r, t; and.b32 t, b1, lt; popc.b32 n, t; add.s32 r, r, n; "
    "and.b32 t, b2, lt; popc.b32 n, t; add.s32 r, r, n; and.b32 t, b3, lt; popc.b32 n, t; add.s32 r, r, n; "
    "add.s32 r, r, $20; "
    "mul.wide.s32 a, r, 4; add.s64 a, a, $28; @p0 st.global.b32 [a], $8; @p0 add.s32 r, r, 1; "
    "mul.wide.s32 a, r, 4; add.s64 a, a, $28; @p1 st.global.b32 [a], $9; @p1 add.s32 r, r, 1; "
    "mul.wide.s32 a, r, 4; add.s64 a, a, $28; @p2 st.global.b32 [a], $10; @p2 add.s32 r, r, 1; "
    "mul.wide.s32 a, r, 4; add.s64 a, a, $28; @p3 st.global.b32 [a], $11; "
    "DONE: mov.b32 $1, $0; mov.b32 $2, $0; mov.b32 $3, $0; }")


@triton.jit
def _compact_tile(x, cols, L, tau_f, cnt, seg_slots, CAP: tl.constexpr, EMULATE: tl.constexpr,
                  VOTES: tl.constexpr):
    """Pass 2's step over one [SEGS, SEG_BLK] tile of scores x at columns cols (a segment a row, each inside
    one warp): the columns < L whose order key is >= tau's go to their segment's next slots, in index order;
    returns the segments' counts, [SEGS, SEG_BLK] (each count in every column of its segment). The keys are
    compared as floats: x >= tau_f (tau's own value, tau not NaN's key) is key(x) >= tau for every x, since the
    order key is monotone, NaN compares false as its key is the lowest, and -0.0 >= +0.0 as their keys are equal. A
    segment with more than CAP candidates sends its row to the exact walk, so where those land does not matter.
    VOTES: on the GPU, where a lane holds 4 consecutive columns of its warp's segment (VEC4 tiles;
    test_select_pass2_stays_inside_warps checks the layout), by warp votes (COMPACT_BY_VOTES_PTX: the same slots);
    else by a scan along the segment (its candidates past CAP all land on the last slot)."""
    if VOTES:
        return tl.inline_asm_elementwise(
            COMPACT_BY_VOTES_PTX, "=r,=r,=r,=r,f,f,f,f,r,r,r,r,f,f,f,f,r,r,r,r,r,r,r,r,r,r,r,r,l,l,l,l",
            [x, cols, tl.zeros_like(x) + tau_f, tl.zeros_like(cols) + L, cnt, tl.zeros_like(cols) + CAP,
             (seg_slots + tl.zeros_like(cols)).to(tl.int64)], dtype=tl.int32, is_pure=False, pack=4)
    else:
        keep = (x >= tau_f) & (cols < L)
        k = keep.to(tl.int32)
        slot = tl.minimum(cnt + tl.cumsum(k, axis=1) - 1, CAP - 1)
        _store_where(seg_slots + slot, cols, keep, EMULATE)
        return cnt + tl.sum(k, axis=1)[:, None]


@triton.jit
def _select_kernel(sc_ptr, gm_ptr, cand_ptr, out_ptr, seg_ptr,
                   s_first, n_q, k_eff, idx_offset,
                   stride_s, stride_g, stride_c, stride_o,
                   RATIO: tl.constexpr, CAP: tl.constexpr, W: tl.constexpr, WP: tl.constexpr,
                   EMULATE: tl.constexpr, VARLEN: tl.constexpr, SEGS: tl.constexpr, SEG_BLK: tl.constexpr,
                   HAS_GM: tl.constexpr, VEC4: tl.constexpr, STEP: tl.constexpr):
    # EMULATE: in the interpreter (no PTX; its maximum propagates NaN), the plain-Triton forms of two steps
    r = tl.program_id(0)
    row = sc_ptr + r.to(tl.int64) * stride_s
    cand = cand_ptr + r.to(tl.int64) * stride_c
    orow = out_ptr + r.to(tl.int64) * stride_o
    if VARLEN:
        # a packed batch: the query's position in its own sequence, whose tokens start at tok0 and rows at
        # row0; its score row holds those rows from column 0 (score_chunk), so everything below works on the
        # sequence's own columns, as a B = 1 run. (A per-row column base added to `row` had cost 36 registers,
        # ptxas -v, and with them 3 of the 7 selection programs an SM holds.)
        s, tok0, row0 = load_token_segments(seg_ptr, r, r < n_q)
        idx_offset += row0
    else:
        s = s_first + r                                 # the query's position
        tok0 = 0
    L = (s + 1) // RATIO                                # visible rows of this query
    if W > 0:
        # the key list starts with the sliding window max(0, s-W+1)..s, -1 padded
        store_window(orow, s, tok0, W, WP)
        orow += W
    offs = tl.arange(0, CAP)
    if L <= k_eff:
        # every visible row is selected; the rest is -1
        tl.store(orow + offs, tl.where(offs < L, offs + idx_offset, -1), mask=offs < k_eff)
    else:
        if L <= CAP:
            x = tl.load(row + offs, mask=offs < L, other=NEG_INF)
            _write_topk(_rank_key(x), offs < L, offs, k_eff, orow, idx_offset, tl.full([], 0, tl.uint32),
                        tl.full([], UINT32_MAX, tl.uint32))
        else:
            # pass 1: the max of CAP strided groups (element i joins group i % CAP; all
            # non-empty since L > CAP). Padding and the initial value are NaN, the lowest rank, so every
            # group's maximum is one of its own elements' keys (a group of NaN scores has a NaN maximum)
            if HAS_GM:
                # the score kernel kept them as it wrote the row (score_gluon.py): one read of CAP values
                gm = tl.load(gm_ptr + r.to(tl.int64) * stride_g + offs)
            else:
                # two blocks in flight per iteration
                gm = tl.full([CAP], float("nan"), tl.float32)
                for b0 in range(0, L, 2 * CAP):
                    x1 = tl.load(row + b0 + offs, mask=b0 + offs < L, other=float("nan"))
                    x2 = tl.load(row + b0 + CAP + offs, mask=b0 + CAP + offs < L, other=float("nan"))
                    gm = _max_nan_last(gm, _max_nan_last(x1, x2, EMULATE), EMULATE)
            # tau: the K-th largest group max, a lower bound of the row's K-th largest value; a group maximum's key
            # less than 2^TAU_SLACK below it is enough (a lower bound still: a few more candidates, in a band of
            # 2^(TAU_SLACK - 23) of its value), bisected from a range _threshold_range finds. Being a group
            # maximum's key, it is a float's (or NaN's)
            u_gm = _rank_key(gm)
            lo, hi = _threshold_range(gm, u_gm, k_eff, CAP)
            tau = _kth_largest_key(u_gm, offs < CAP, k_eff, lo, hi, TAU_SLACK)
            # pass 2: every x >= tau (a superset of the top K). The row is split into SEGS contiguous segments
            # walked side by side in [SEGS, SEG_BLK] tiles, one warp a segment (axis 1 lies inside a warp), so
            # each tile is compacted by warp votes (the interpreter: a scan): no barrier, no shared memory. A
            # segment's candidate columns go, in index order, to its own CAP slots; the segments in order are then all
            # candidates in index order. (One scan over 1,024-slot blocks of the whole CTA, two barriers each,
            # took 70 % of the selection: docs/performance.md.)
            seg_len = tl.cdiv(tl.cdiv(L, SEGS), STEP * SEG_BLK) * STEP * SEG_BLK
            segs = tl.arange(0, SEGS)
            cols0 = segs[:, None] * seg_len + tl.arange(0, SEG_BLK)[None, :]
            seg_slots = cand + segs[:, None] * CAP
            cnt = tl.zeros([SEGS, SEG_BLK], tl.int32)
            tau_k = tau.to(tl.int32, bitcast=True) ^ INT32_MIN
            tau_f = _key_value(tau_k)
            # VEC4 (rows of a multiple of 4 columns: the composer's whole key tiles): whole 16-byte groups of 4
            # columns are read, one load a lane, the columns past L then left out by _compact_tile; else 1 column
            GROUP: tl.constexpr = 4 if VEC4 else 1
            VOTES: tl.constexpr = VEC4 and not EMULATE
            L_groups = tl.cdiv(L, GROUP)
            for b0 in range(0, seg_len, STEP * SEG_BLK):
                # STEP tiles in flight a step (the selection waits on its loads: all issued before any is used)
                cols1 = cols0 + b0
                cols2 = cols1 + SEG_BLK
                x1 = tl.load(row + cols1, mask=cols1 // GROUP < L_groups, other=NEG_INF)
                x2 = tl.load(row + cols2, mask=cols2 // GROUP < L_groups, other=NEG_INF)
                if STEP == 4:
                    cols3 = cols2 + SEG_BLK
                    cols4 = cols3 + SEG_BLK
                    x3 = tl.load(row + cols3, mask=cols3 // GROUP < L_groups, other=NEG_INF)
                    x4 = tl.load(row + cols4, mask=cols4 // GROUP < L_groups, other=NEG_INF)
                cnt = _compact_tile(x1, cols1, L, tau_f, cnt, seg_slots, CAP, EMULATE, VOTES)
                cnt = _compact_tile(x2, cols2, L, tau_f, cnt, seg_slots, CAP, EMULATE, VOTES)
                if STEP == 4:
                    cnt = _compact_tile(x3, cols3, L, tau_f, cnt, seg_slots, CAP, EMULATE, VOTES)
                    cnt = _compact_tile(x4, cols4, L, tau_f, cnt, seg_slots, CAP, EMULATE, VOTES)
            # the candidates were stored by other threads of this program: make them visible before
            # reading them back (bar.sync orders global memory within the CTA; without it a thread could
            # read a slot before another warp's store lands and take a stale candidate)
            tl.debug_barrier()
            cnt = tl.max(cnt, axis=1)
            total = tl.sum(cnt, axis=0)
            # (tau is NaN's key where fewer than K groups hold a number: then every column is a candidate, and
            # the exact walk takes the row)
            if (total <= CAP) & (tau_k != INT32_MIN):
                # candidate j of the segments in order is slot j - start[g] of the last segment g with
                # start[g] <= j (an empty segment shares its start with the next one, which then wins)
                j = offs
                src = j
                start = tl.full([], 0, tl.int32)
                for g in tl.static_range(1, SEGS):
                    start += tl.sum(tl.where(segs == g - 1, cnt, 0), axis=0)
                    src = tl.where(j >= start, g * CAP + j - start, src)
                has = j < total
                c = tl.load(cand + src, mask=has, other=0)
                x = tl.load(row + c, mask=has, other=NEG_INF)
                # every candidate's key is >= tau: the K-th largest lies between tau and the largest candidate
                u = _rank_key(x)
                _write_topk(u, has, c, k_eff, orow, idx_offset, tau, tl.max(tl.where(has, u, 0), axis=0))
            else:
                _select_exact(row, orow, L, k_eff, idx_offset, CAP)

@triton.jit
def _select_exact(row, orow, L, k_eff, idx_offset, BLK: tl.constexpr):
    # Exact fallback, streaming over the row: its smallest and largest rank key (_rank_key), then
    # _kth_largest_key's bisection over that range (each count a pass over the row); then everything above its
    # bound v and the first ties at v in index order. v need not be the K-th largest key itself: either the range
    # closed on it, or exactly K keys are >= v, and then "above v, then ties at v" takes just those K. (Rows come
    # here with more than CAP candidates, mostly from ties; where the K-th key is tied no probe counts exactly K,
    # and the bisection takes log2(largest - smallest key) passes, not 32.)
    offs = tl.arange(0, BLK)
    lo = tl.full([], UINT32_MAX, tl.uint32)
    hi = tl.full([], 0, tl.uint32)
    for b0 in range(0, L, BLK):
        inb = b0 + offs < L
        u = _rank_key(tl.load(row + b0 + offs, mask=inb, other=NEG_INF))
        lo = tl.minimum(lo, tl.min(tl.where(inb, u, UINT32_MAX), axis=0))
        hi = tl.maximum(hi, tl.max(tl.where(inb, u, 0), axis=0))
    a = lo
    b = hi
    n = k_eff + 1
    while (b > a) & (n != k_eff):
        mid = _probe_between(a, b)
        c = tl.full([], 0, tl.int32)
        for b0 in range(0, L, BLK):
            inb = b0 + offs < L
            c += tl.sum(((_rank_key(tl.load(row + b0 + offs, mask=inb, other=NEG_INF)) >= mid) & inb).to(tl.int32),
                        axis=0)
        a, b, n = _bisect_step(a, b, n, mid, c, k_eff)
    v = a
    n_gt = tl.full([], 0, tl.int32)
    for b0 in range(0, L, BLK):
        x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
        n_gt += tl.sum(((_rank_key(x) > v) & (b0 + offs < L)).to(tl.int32), axis=0)
    need_eq = k_eff - n_gt
    wr = tl.full([], 0, tl.int32)
    eq_seen = tl.full([], 0, tl.int32)
    for b0 in range(0, L, BLK):
        x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
        u = _rank_key(x)
        inb = b0 + offs < L
        eq = (u == v) & inb
        eq_rank = eq_seen + tl.cumsum(eq.to(tl.int32), axis=0)   # 1-based rank among ties
        take = ((u > v) & inb) | (eq & (eq_rank <= need_eq))
        slot = wr + tl.cumsum(take.to(tl.int32), axis=0) - 1
        tl.store(orow + slot, b0 + offs + idx_offset, mask=take)
        wr += tl.sum(take.to(tl.int32), axis=0)
        eq_seen += tl.sum(eq.to(tl.int32), axis=0)


# ---------------------------------------------------------------------------------------
# configuration and launchers
SCORE_WARPS = 8          # BT = SCORE_TILE_KEYS (cost.py): keys per MMA tile (M)
SCORE_STAGES = 3
# the FP8 MMA: one warpgroup per program (one m64n256k32 wgmma per K step); measured on an H200,
# last 2,048-query chunk of v4-flash at S = 262,144 (benchmarks/results/quant-h200/score-sweep.json):
# 2.42 ms with 4 warps against 3.13 ms with 8 (bf16 operands: 3.38 ms, best with 8)
SCORE_FP8_WARPS = 4
# a register cap for the FP8 score (ptxas's own choice is 234 since the queries come packed): measured on an
# H200 (benchmarks/results/prepack-h200/), v4-flash at 262,144 with the score overlap, none / 224 / 216:
# composed 257.3 / 243.9 / 243.8 ms, indexer 221.2 / 205.5 / 200.4, packed 4 x 65,536 107.5 / 106.3 / 110.9
# (216 spills in the packed walk, ptxas -v; 224 spills in neither).
SCORE_FP8_MAXNREG = 224
SELECT_SEG_BLOCK = 128           # pass 2's columns per segment and tile: 32 lanes x 4 (one 16-byte load a lane)
# pass 2's tiles a step, all loaded before any is compacted: it waits on its loads (Nsight Compute: 29 % of its
# samples at the first compare after them). H200, last chunk at 262,144: top-1,024 0.46 -> 0.43 ms, top-2,048
# 0.81 -> 0.73 for 4 rather than 2; top-512 0.332 both ways (64 registers instead of 56: 8 programs an SM, not 9;
# and with the group maxima ptxas reuses the first tile's registers for the fourth, so it waits for the first load
# before it issues the last two)
SELECT_STEP_TILES = 4
# the selection's threshold tau (a lower bound of a row's K-th largest score) to within 2^12 keys below it: 12 counts
# fewer than the exact key, and the band below tau it adds is 2^-11 of its value (a rank key's low bits are the
# float's mantissa's)
TAU_SLACK = tl.constexpr(12)


# a register cap for the selection where a thread holds SELECT_PER_THREAD of a row's CAP group maxima (top-1,024 on 4
# warps, top-2,048 on 8), by its warps: ptxas takes 106 and 127 there, so 4 and 2 programs share an SM. The values it
# spills are stored and loaded once a row, outside pass 2 and the bisections (the exact walk, rare, loads a few in
# its loops). With fewer values a thread ptxas stays under 64 itself (top-512: 56; capped at 48 or 64, no faster).
# H200, the last 2,048-query chunk (benchmarks/results/select-warps-h200/, select-votes-h200/): top-2,048 (v3.2 at
# 131,072) 0.85 ms on 4 warps, 0.61 on 8, 0.53 capped at 80, 0.49 at 64; with pass 2 by warp votes 0.461 at 64, 0.464
# at 48 and 0.449 at 40 (6 programs an SM). Top-1,024 (v4-pro at 262,144) 0.31 -> 0.27 at 80, 0.26 at 64; with the
# votes 0.244 at 64, 0.236 at 48 and 0.227 at 56 (9 programs an SM).
SELECT_MAXNREG = {4: 56, 8: 40}


def select_launch_options(topk: int) -> dict:
    """The selection's launch options for this top-k: a warp for each row segment (cost.select_segments), and the
    register cap for those warps where a thread holds SELECT_PER_THREAD values; the launcher's and the IR's
    (ir.compile_ir)."""
    segs = select_segments(topk)
    if segs in SELECT_MAXNREG and select_capacity(topk) == 32 * segs * SELECT_PER_THREAD:
        return {"num_warps": segs, "maxnreg": SELECT_MAXNREG[segs]}
    return {"num_warps": segs}


def score_launch_options(operand: int) -> dict:
    """The score kernel's launch options for its MMA operand (2 FP8, 1 bf16, 0 fp32): the launchers' and the
    IR's (ir.compile_ir), so the IR shown is the kernel that runs."""
    if operand == 2:
        opts = {"num_warps": SCORE_FP8_WARPS, "num_stages": SCORE_STAGES}
        return dict(opts, maxnreg=SCORE_FP8_MAXNREG) if SCORE_FP8_MAXNREG else opts
    return {"num_warps": SCORE_WARPS, "num_stages": SCORE_STAGES}


MAX_HEADS = 256          # (query, head) pairs are tiled 256 wide: at least one query per program
MAX_DIM = 256            # q^T [DP, 256] stays in registers / shared memory
MAX_TOPK = 8192          # the selection holds CAP = 2 * topk candidates per row


def padded_heads(heads: int) -> int:
    """HP: heads rounded up to a power of two (the kernel masks the padding)."""
    return next_pow2(heads)


def padded_dim(dim: int) -> int:
    """DP: index dims rounded up to a power of two >= 16 (the kernel masks the padding)."""
    return max(16, next_pow2(dim))


def score_block_queries(heads: int) -> int:
    """BQ: queries per score program, so that N = BQ * HP = 256 (the widest wgmma)."""
    return max(1, 256 // padded_heads(heads))


def kernel_limits(heads: int, dim: int, topk: int) -> Optional[str]:
    """Why the Triton indexer cannot run these sizes (None when it can): checked before any launch
    and before any compilation (csa_dsl.compile, csa-dsl ir), so nothing hangs or fails deep inside."""
    if not 1 <= heads <= MAX_HEADS:
        return (f"indexer heads = {heads}: the Triton score kernel takes 1..{MAX_HEADS} heads (it tiles "
                f"(query, head) pairs {MAX_HEADS} wide); split the heads over several indexers")
    if not 1 <= dim <= MAX_DIM:
        return f"indexer dim = {dim}: the Triton score kernel takes 1..{MAX_DIM} dims per head"
    if not 1 <= topk <= MAX_TOPK:
        return (f"indexer topk = {topk}: the Triton selection takes 1..{MAX_TOPK} (it holds 2*topk candidates "
                f"per row); use topk <= {MAX_TOPK}")
    return None


def check_indexer_shapes(idx_q, idx_w, idx_k, topk: int, ratio: int, allow_fp32: bool = False,
                         require_cuda: bool = True):
    """Validate before any launch; raise with a message that says how to fix the call."""
    for name, t in (("idx_q", idx_q), ("idx_w", idx_w), ("idx_k", idx_k)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if idx_q.dim() != 4:
        raise ValueError(f"idx_q must be [B, S, HI, DI], got shape {tuple(idx_q.shape)}")
    B, S, HI, DI = idx_q.shape
    if tuple(idx_w.shape) != (B, S, HI):
        raise ValueError(f"idx_w must be [B, S, HI] = {(B, S, HI)}, got {tuple(idx_w.shape)}")
    if idx_k.dim() != 3 or idx_k.shape[0] != B or idx_k.shape[2] != DI:
        raise ValueError(f"idx_k must be [B, T, DI] = [{B}, T, {DI}], got {tuple(idx_k.shape)}")
    if not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio must be a positive int, got {ratio!r}")
    T = idx_k.shape[1]
    if T != S // ratio:
        raise ValueError(f"idx_k has {T} rows but S // ratio = {S} // {ratio} = {S // ratio}; pass the "
                         f"compressed index keys of the same sequence")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    ok = (torch.bfloat16, torch.float32) if allow_fp32 else (torch.bfloat16,)
    if idx_q.dtype not in ok or idx_k.dtype not in ok:
        raise TypeError(f"idx_q and idx_k must be bfloat16 (got {idx_q.dtype}, {idx_k.dtype}); "
                        f"convert with .to(torch.bfloat16)")
    if idx_q.dtype != idx_k.dtype:
        raise TypeError(f"idx_q ({idx_q.dtype}) and idx_k ({idx_k.dtype}) must share a dtype")
    if idx_w.dtype != torch.float32:
        raise TypeError(f"idx_w must be float32, got {idx_w.dtype}; convert with .float()")
    why = kernel_limits(HI, DI, topk)
    if why is not None:
        raise ValueError(why)
    for name, t in (("idx_q", idx_q), ("idx_w", idx_w), ("idx_k", idx_k)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() on it")
    dev = idx_q.device
    if idx_w.device != dev or idx_k.device != dev:
        raise ValueError(f"idx_q, idx_w, idx_k must be on one device, got {idx_q.device}, {idx_w.device}, "
                         f"{idx_k.device}")
    if require_cuda and dev.type != "cuda" and not kernels_interpreted(_score_kernel):
        raise ValueError(f"the Triton indexer needs CUDA tensors (got {dev}); on a CPU use the reference "
                         f"(csa_dsl.indexer_topk(..., backend='torch')) or set TRITON_INTERPRET=1 for tests")
    return B, S, HI, DI, T


def score_chunk(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, out: torch.Tensor, *, s_first: int,
                ratio: int, seg: Optional[torch.Tensor] = None, round_bf16: bool = False, walk: str = "auto",
                gmax: Optional[torch.Tensor] = None) -> None:
    """Scores of queries [s_first, s_first + n) against their visible rows into out[:n, :ld] (fp32).

    q [n, HI, DI], w [n, HI], k [T, DI] (one batch element), out [>= n, ld] with ld >= the
    visible rows of the last query. Columns beyond a row's own visible count but inside the
    tile range are -inf; further columns are not written. `seg` (a packed batch): the queries'
    rows of the segment table (varlen/naive.py, [n, 4] int32); each query then sees its own
    sequence's rows [row0, row0 + (pos+1)//m), and its column j holds packed row row0 + j (only those
    columns are written; ld = varlen.naive.score_columns(T, max_seqlen, m) suffices). `round_bf16`: the
    official code's bf16 score (naive.indexer_scores: each head's dot, each weighted term and the head sum
    rounded to bf16). `walk` and `gmax` as in score_chunk_fp8: bf16 operands of 64 heads x 128 dims, unpacked,
    take the Gluon walk on a GPU (the same bits as _score_kernel's)."""
    n, HI, DI = q.shape
    T = k.shape[0]
    if n == 0:
        return
    fits = (q.dtype == k.dtype == torch.bfloat16 and tma_ready(q, k)
            and gluon_walk_fits(HI, DI, k.dtype, seg is not None))
    if _gluon_walk_ran(walk, fits, q, None, w, k, None, out, s_first, ratio, seg, gmax, round_bf16):
        return
    if kernels_interpreted(_score_kernel) and q.dtype == torch.bfloat16:
        # the interpreter's tl.dot is wrong on bf16 operands; bf16 -> fp32 is exact, and the
        # kernel's fp32 path (IEEE dot) then computes the same fp32 math
        q, k = q.float(), k.float()
    BQ = score_block_queries(HI)
    grid = (triton.cdiv(n, BQ),)
    _score_kernel[grid](q, w, w, k, w, out, segments_arg(seg, n, w), s_first, n, T, q.stride(0), w.stride(0),
                        k.stride(0), out.stride(0), RATIO=ratio, HI=HI, DI=DI, HP=padded_heads(HI),
                        DP=padded_dim(DI), BQ=BQ, BT=SCORE_TILE_KEYS, IEEE=(q.dtype == torch.float32), QUANT=False,
                        OPERAND=1, VARLEN=seg is not None, EMULATE=kernels_interpreted(_score_kernel),
                        ROUND=round_bf16, **score_launch_options(1))


def _gluon_walk_ran(walk: str, fits: bool, q, q_scale, w, k, k_scale, out, s_first: int, ratio: int,
                    seg: Optional[torch.Tensor], gmax: Optional[torch.Tensor], round_bf16: bool) -> bool:
    """score_chunk(_fp8)'s choice of walk: the Gluon one (score_gluon.score_chunk_gluon) where `walk` is 'auto', the
    operands `fits` it and the kernels are not interpreted; True when it ran. A bad `walk` is refused, and `gmax`
    where the Triton walk runs (it keeps no group maxima), before any launch."""
    if walk not in ("auto", "triton"):
        raise ValueError(f"walk must be 'auto' or 'triton', got {walk!r}")
    if walk == "auto" and fits and not kernels_interpreted(_score_kernel):
        check_group_maxima(gmax, q.shape[0], seg)
        score_chunk_gluon(q, q_scale, w, k, k_scale, out, s_first=s_first, ratio=ratio,
                          store_queries=score_block_queries(q.shape[1]), gmax=gmax, round_bf16=round_bf16)
        return True
    if gmax is not None:
        raise ValueError("gmax is written by the Gluon walk only (64 x 128 bf16 or FP8 operands, unpacked rows, "
                         "walk='auto', on a GPU); pass gmax=None here and select_chunk finds the maxima itself")
    return False


def check_group_maxima(gmax: Optional[torch.Tensor], n: int, seg: Optional[torch.Tensor], cap: int = 0) -> None:
    """Refuse, before any launch, group maxima the kernels cannot take: fp32 [>= n, CAP] with contiguous rows, for
    unpacked rows only; CAP the selection's own (`cap`), or for the score walk (cap 0) whole key tiles (its
    phases)."""
    if gmax is None:
        return
    if (gmax.dtype != torch.float32 or gmax.dim() != 2 or gmax.shape[0] < n or gmax.stride(1) != 1
            or (gmax.shape[1] != cap if cap else gmax.shape[1] % SCORE_TILE_KEYS) or seg is not None):
        want = f"{cap}" if cap else f"CAP, a multiple of {SCORE_TILE_KEYS}"
        raise ValueError(f"gmax must be fp32 [>= {n}, {want}] with contiguous rows (the group maxima the Gluon "
                         f"score walk writes, unpacked rows only), got {gmax.dtype} {tuple(gmax.shape)}"
                         + (" with seg" if seg is not None else ""))


def score_chunk_fp8(q8: torch.Tensor, q_scale: torch.Tensor, w: torch.Tensor, k8: torch.Tensor,
                    k_scale: torch.Tensor, out: torch.Tensor, *, s_first: int, ratio: int,
                    seg: Optional[torch.Tensor] = None, walk: str = "auto",
                    gmax: Optional[torch.Tensor] = None, round_bf16: bool = False) -> None:
    """score_chunk (`seg` as there) with the official quantisation (docs/semantics.md section 5), on operands
    packed by quant.kernel.pack_rows: q8 [n, HI, DI] / q_scale [n, HI] the queries (one power-of-two scale per
    (query, head)), k8 [T, DI] / k_scale [T] the keys. The values' dtype is the MMA's (quant.formats.keys_dtype:
    FP8 e4m3 for FP4 steps, bf16 for FP8 steps unless Indexer.fp8_mma; fp32 in the interpreter). The dot of the
    packed values times both scales is the dot of the dequantised values (naive.score_chunk_fp8) up to fp32
    accumulation rounding, wherever every value fits e4m3 at its row's scale (quant/naive.fp8_rows states the
    bound otherwise); FP8 steps' values on FP8 operands carry the FP8 accumulator's rounding instead
    (docs/semantics.md).

    `walk`: 'auto' runs the Gluon walk (score_gluon.py) where it fits (V4's 64 x 128 FP8 operands, unpacked
    rows, on a GPU) and _score_kernel elsewhere; 'triton' always _score_kernel (benchmarks and tests compare
    the two). `gmax` [n, CAP] fp32 (select_chunk's, CAP = cost.select_capacity(topk)): the Gluon walk also
    writes every row's CAP group maxima there, so that select_chunk(..., gmax=gmax) skips its pass 1; only where
    the Gluon walk runs (score_gluon.group_maxima_fit). `round_bf16`: the official code's bf16 score (score_chunk;
    both walks, the same bits)."""
    n, HI, DI = q8.shape
    T = k8.shape[0]
    if n == 0:
        return
    if q8.dtype != k8.dtype or tuple(q_scale.shape) != (n, HI) or k8.shape[1] != DI:
        raise ValueError(f"q8 [n, HI, DI] and k8 [T, DI] must share a dtype and DI, q_scale be [n, HI]; got "
                         f"q8 {tuple(q8.shape)} {q8.dtype}, q_scale {tuple(q_scale.shape)}, k8 {tuple(k8.shape)} "
                         f"{k8.dtype} (pack both with quant.kernel.pack_rows)")
    if not (q8.is_contiguous() and q_scale.is_contiguous()):
        raise ValueError("q8 and q_scale must be contiguous (quant.kernel.pack_rows writes them so)")
    if _gluon_walk_ran(walk, gluon_walk_fits(HI, DI, k8.dtype, seg is not None), q8, q_scale, w, k8, k_scale, out,
                       s_first, ratio, seg, gmax, round_bf16):
        return
    interp = kernels_interpreted(_score_kernel)
    operand = 0 if interp else (2 if k8.dtype == torch.float8_e4m3fn else 1)
    if interp:
        q8, k8 = q8.float(), k8.float()   # no FP8 in the interpreter: the same values in fp32 (exact)
    BQ = score_block_queries(HI)
    grid = (triton.cdiv(n, BQ),)
    _score_kernel[grid](q8, q_scale, w, k8, k_scale, out, segments_arg(seg, n, w), s_first, n, T, q8.stride(0),
                        w.stride(0), k8.stride(0), out.stride(0), RATIO=ratio, HI=HI, DI=DI, HP=padded_heads(HI),
                        DP=padded_dim(DI), BQ=BQ, BT=SCORE_TILE_KEYS, IEEE=interp, QUANT=True, OPERAND=operand,
                        VARLEN=seg is not None, EMULATE=interp, ROUND=round_bf16, **score_launch_options(operand))


def select_chunk(scores: Optional[torch.Tensor], out: torch.Tensor, cand: Optional[torch.Tensor] = None, *,
                 s_first: int, ratio: int, k_eff: int, topk: int, idx_offset: int = 0, window: int = 0,
                 seg: Optional[torch.Tensor] = None, gmax: Optional[torch.Tensor] = None) -> None:
    """Key lists of queries [s_first, s_first + n), n = len(out): out[:, :window] = the sliding window
    ids, out[:, window:window + k_eff] = the top-k_eff visible rows of `scores` + idx_offset (int32,
    -1 padded; NaN scores rank below every number; ties to the smaller row). With k_eff = 0 only the
    window is written and `scores` is not read. `seg` (a packed batch, as in score_chunk): each query
    selects among its own sequence's columns and its window stays inside its sequence; the ids are
    packed (token ids; packed row + idx_offset). `gmax` [>= n, CAP] fp32 (unpacked rows): each row's CAP group
    maxima as score_chunk_fp8's Gluon walk keeps them (naive.group_maxima); the threshold then comes from them
    instead of a pass over the row (the same lists)."""
    n = out.shape[0]
    if n == 0:
        return
    if scores is None:      # no compressed row yet (k_eff = 0): only the window is written
        if k_eff:
            raise ValueError("select_chunk needs scores when k_eff > 0")
        scores = out.view(torch.float32) if out.numel() else torch.empty(1, 1, device=out.device)
    cap = select_capacity(topk)
    if cand is None:
        cand = torch.empty(n, candidate_slots(topk), dtype=torch.int32, device=out.device)
    elif cand.dtype != torch.int32 or cand.dim() != 2 or cand.shape[0] < n or cand.shape[1] < candidate_slots(topk) \
            or cand.stride(1) != 1:
        raise ValueError(f"cand must be int32 [>= {n}, >= {candidate_slots(topk)}] with contiguous rows (CAP slots for "
                         f"each of the {select_segments(topk)} row segments: cost.candidate_slots), got {cand.dtype} "
                         f"{tuple(cand.shape)}")
    check_group_maxima(gmax, n, seg, cap)
    _select_kernel[(n,)](scores, scores if gmax is None else gmax, cand, out, segments_arg(seg, n, out), s_first, n,
                         k_eff, idx_offset, scores.stride(0), 0 if gmax is None else gmax.stride(0), cand.stride(0),
                         out.stride(0), RATIO=ratio, CAP=cap, W=window, WP=window_pow2(window),
                         EMULATE=kernels_interpreted(_select_kernel), VARLEN=seg is not None,
                         SEGS=select_segments(topk), SEG_BLK=SELECT_SEG_BLOCK, HAS_GM=gmax is not None,
                         VEC4=scores.shape[1] % 4 == 0 and scores.stride(1) == 1, STEP=SELECT_STEP_TILES,
                         **select_launch_options(topk))
