"""The 1-bit self-index in Triton (docs/semantics.md section 7; naive.py is the reference).

codes: one program per block of rows packs the signs of every channel (1 bit, LSB first, 32 per
int32 word; sign(0) = +1) and writes alpha = mean |K| beside them, in one pass over the rows.
score: the head-summed query qbar (fp32) is split into two bf16 halves, hi + lo (hi = bf16(qbar),
lo = bf16(qbar - hi): 16 significant bits together); the kernel unpacks the codes of a key tile into
0/1 bf16 values (exact) and computes qbar . (2 b - 1) = 2 (qbar . b) - sum(qbar) with two
tensor-core dots per tile, then scales by alpha. Only the key tiles visible to the chunk's last
query are computed (as the lightning indexer's score kernel), invisible entries are -inf, so the
same selection kernel reads the buffer.
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
SCORE_STAGES = 2


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
def _score_kernel(qh_ptr, ql_ptr, qsum_ptr, codes_ptr, alpha_ptr, out_ptr, seg_ptr, s_first, n_q, T,
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
    qsum = tl.load(qsum_ptr + q0 + offs_q, mask=q_ok, other=0.0)          # sum_d qbar, fp32
    # the rows each query sees and the tiles the block walks (a packed batch: each query's own sequence's)
    lo, nvis, t_start, t_end = visible_tiles(seg_ptr, s_first, q0, offs_q, q_ok, n_q, T, RATIO, BQ, BT, VARLEN)
    out_rows = out_ptr + (q0 + offs_q).to(tl.int64)[:, None] * stride_o
    NWP: tl.constexpr = DP // 32
    wj = tl.arange(0, NWP)
    shift = tl.arange(0, 32).to(tl.uint32)
    for t0 in range(t_start, t_end, BT):
        offs_t = t0 + tl.arange(0, BT)
        t_ok = offs_t < T
        # the tile's words [NWP, BT], expanded in registers to [DP, BT] bits: channel d of row t is
        # bit d % 32 of word d // 32
        w = tl.load(codes_ptr + offs_t.to(tl.int64)[None, :] * stride_c + wj[:, None],
                    mask=t_ok[None, :] & (wj < D // 32)[:, None], other=0).to(tl.uint32)
        bits = (w[:, None, :] >> shift[None, :, None]) & 1
        b = tl.reshape(bits, (DP, BT)).to(qh.dtype)
        if IEEE:
            dot = tl.dot(qh, b, input_precision="ieee") + tl.dot(ql, b, input_precision="ieee")
        else:
            dot = tl.dot(qh, b) + tl.dot(ql, b)                            # qbar . bits, fp32 accumulation
        alpha = tl.load(alpha_ptr + offs_t, mask=t_ok, other=0.0)
        sc = (2.0 * dot - qsum[:, None]) * alpha[None, :]
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
    """[n, H, D] -> (hi, lo, sum): qbar = sum_h q in fp32 as bf16 hi + lo, and sum_d qbar (fp32).
    The fp32 sum of bf16 q reads q directly on CUDA (no fp32 copy of the chunk; a CPU sum makes one)."""
    qb = q.sum(1, dtype=torch.float32)
    hi = qb.to(torch.bfloat16)
    lo = (qb - hi.float()).to(torch.bfloat16)
    return hi, lo, qb.sum(1)


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
    hi, lo, qsum = split_qbar(q)
    ieee = kernels_interpreted(_score_kernel)
    if ieee:   # the interpreter's tl.dot is wrong on bf16 operands: fp32 carries the same values
        hi, lo = hi.float(), lo.float()
    _score_kernel[(triton.cdiv(n, SCORE_QUERIES),)](
        hi, lo, qsum, codes, alpha, out, segs, s_first, n, T, hi.stride(0),
        codes.stride(0), out.stride(0), RATIO=ratio, D=D, DP=next_pow2(D), BQ=SCORE_QUERIES, BT=SCORE_ROWS,
        IEEE=ieee, VARLEN=seg is not None, num_warps=SCORE_WARPS, num_stages=SCORE_STAGES)
