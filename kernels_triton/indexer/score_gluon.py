"""The FP8 score walk of the V4 indexer (64 heads x 128 dims, unpacked rows) in Gluon.

It computes what kernel._score_kernel computes with QUANT and FP8 operands (the same packed operands, the same
tiles, the same -inf past a query's visible rows, nothing written past the block's last visible row), but
writes its layouts itself, which Triton's tl.dot/tl.sum/tl.store do not let it do:

- the head sum. A tile's MMA leaves [64 keys x 256 (query, head)] fp32 sums in the wgmma layout: a thread
  holds 16 of a query's 64 heads for 2 keys, and the 4 lanes of a quad hold the other 48. Triton's tl.sum
  adds within the thread and then all-reduces over the quad (16 shuffles and 16 adds a thread), so every lane
  ends with all 8 (key, query) sums and stores all 8 (8 predicated stores, their masks and addresses). Here a
  thread first reduces its heads to one partial sum per (key, query, lane of the quad), then one warp-local
  transpose through shared memory (2 st.shared.v4 + 2 ldmatrix, no CTA barrier) gives each lane the 4
  partials of 2 (key, query) pairs of its own: 6 adds, and 2 masks, addresses and stores instead of 8
  (SASS, ptxas for sm_90a: 384 instructions a warp a 64-key tile against the Triton walk's 484).
- no register cap: ptxas takes 239 registers, and two programs still fit an SM (2 x 128 x 239 <= 65,536).

The sums are added in the Triton walk's order (each thread's heads in register order, then the quad's partials
as its butterfly adds them), so the scores are bit for bit the Triton walk's: a packed batch, which the Triton
walk scores, still equals its sequences run alone (tests/test_indexer_gpu.py and test_varlen_gpu.py check both).
Measured on an H200 (docs/performance.md, "The FP8 score walk in Gluon"): the last 2,048-query chunk of v4-flash
at 262,144 1.99-2.00 against 2.09-2.10 ms; the indexer 167.8-168.5 against 174.1-174.7 ms.

Sizes: 64 heads and 128 dims, the V4 presets' indexer; the packed (varlen) walks, other sizes, bf16 operands
and the interpreter take kernel._score_kernel (kernel.score_chunk_fp8 picks)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma, warpgroup_mma_wait

from .cost import SCORE_TILE_KEYS

GLUON_HEADS = 64        # N = 4 queries x 64 heads = 256, the widest wgmma; the quad transpose below assumes it
GLUON_BLOCK_QUERIES = 256 // GLUON_HEADS    # BQ: queries a program
GLUON_DIM = 128         # the MMA's K: four k32 FP8 steps; q [256, 128] e4m3 is 32 KiB of shared memory
GLUON_STAGES = 3        # key tiles in flight (measured, best of 3: 2, 3, 4 stages 1.985, 1.974, 1.977 ms a chunk)
GLUON_WARPS = 4         # one warpgroup a program, two programs an SM


def gluon_walk_fits(heads: int, dim: int, operand_dtype: torch.dtype, packed: bool) -> bool:
    """Does the Gluon walk take these scores (else kernel._score_kernel does)?"""
    return heads == GLUON_HEADS and dim == GLUON_DIM and operand_dtype == torch.float8_e4m3fn and not packed


@gluon.constexpr_function
def _quad_partials_layout(BT, BQ):
    # [BT keys, BQ queries, 4 partials]: one (key, query)'s 4 partials in one thread; lanes 0-1 of a quad pick the
    # query, lanes 2-4 and the warps the keys as in the wgmma layout (rows r and r + 8 of a warp's 16)
    return gl.DistributedLinearLayout(reg_bases=[[8, 0, 0], [0, 0, 1], [0, 0, 2]],
                                      lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
                                      warp_bases=[[16, 0, 0], [32, 0, 0]], block_bases=[], shape=[BT, BQ, 4])


@gluon.constexpr_function
def _scores_layout(BT, BQ):
    # [BT keys, BQ queries], each element in one thread only (the quad's lanes hold different queries)
    return gl.DistributedLinearLayout(reg_bases=[[8, 0]], lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
                                      warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[BT, BQ])


@gluon.jit
def _score_fp8_gluon(q_ptr, qs_ptr, w_ptr, k_ptr, ks_ptr, out_ptr, s_first, n_q, T,
                     stride_qs, stride_ws, stride_kt, stride_os,
                     RATIO: gl.constexpr, HI: gl.constexpr, DI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr,
                     STAGES: gl.constexpr):
    N: gl.constexpr = BQ * HI
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 32])
    rows16: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])    # 16-byte pieces of rows
    quad_l: gl.constexpr = _quad_partials_layout(BT, BQ)
    out_l: gl.constexpr = _scores_layout(BT, BQ)

    pid = gl.program_id(0)
    q0 = pid * BQ
    # the block's (query, head) rows of q, once, into shared memory as the MMA's B operand ([N, DI], K-major)
    offs_n = gl.arange(0, N, layout=gl.SliceLayout(1, rows16))
    offs_d = gl.arange(0, DI, layout=gl.SliceLayout(0, rows16))
    qrow = q0 + offs_n // HI
    qv = gl.load(q_ptr + qrow.to(gl.int64)[:, None] * stride_qs + (offs_n % HI)[:, None] * DI + offs_d[None, :],
                 mask=(qrow < n_q)[:, None], other=0.0)
    q_smem = gl.allocate_shared_memory(gl.float8e4nv, [N, DI], gl.NVMMASharedLayout.get_default_for(
        [N, DI], gl.float8e4nv), qv)
    # head weight times the query's scale (ReLU(x * s) * w = ReLU(x) * (w * s), s a power of two > 0), in the
    # accumulator's column layout; padding queries: weight 0
    offs_w = gl.arange(0, N, layout=gl.SliceLayout(0, mma))
    qrow_w = q0 + offs_w // HI
    ok_w = qrow_w < n_q
    w = gl.load(w_ptr + qrow_w.to(gl.int64) * stride_ws + offs_w % HI, mask=ok_w, other=0.0)
    w = w * gl.load(qs_ptr + qrow_w.to(gl.int64) * HI + offs_w % HI, mask=ok_w, other=1.0)

    offs_q = gl.arange(0, BQ, layout=gl.SliceLayout(0, out_l))
    q_ok = q0 + offs_q < n_q
    nvis = gl.where(q_ok, (s_first + q0 + offs_q + 1) // RATIO, 0)    # rows query i sees
    out_rows = out_ptr + (q0 + offs_q).to(gl.int64)[None, :] * stride_os
    # the rows the block's last query sees (kernel.visible_tiles): tiles past them are neither computed nor written
    t_end = (s_first + gl.minimum(q0 + BQ, n_q)) // RATIO
    offs_tk = gl.arange(0, BT, layout=gl.SliceLayout(1, rows16))
    offs_to = gl.arange(0, BT, layout=gl.SliceLayout(1, out_l))
    k_ring = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, BT, DI],
                                       gl.NVMMASharedLayout.get_default_for([BT, DI], gl.float8e4nv))
    for i in gl.static_range(STAGES - 1):
        t = i * BT + offs_tk
        async_copy.async_copy_global_to_shared(k_ring.index(i), k_ptr + t.to(gl.int64)[:, None] * stride_kt
                                               + offs_d[None, :], mask=(t < t_end)[:, None])
        async_copy.commit_group()
    acc = gl.zeros([BT, N], gl.float32, layout=mma)
    for t0 in range(0, t_end, BT):
        j = t0 // BT
        async_copy.wait_group(STAGES - 2)       # tile j is in (Gluon's barrier pass adds the CTA barrier)
        acc = warpgroup_mma(k_ring.index(j % STAGES), q_smem.permute((1, 0)), acc, use_acc=False, is_async=True)
        # the tile STAGES - 1 ahead goes to the slot tile j - 1 used: its MMA was waited for last iteration
        t = t0 + (STAGES - 1) * BT + offs_tk
        async_copy.async_copy_global_to_shared(k_ring.index((j + STAGES - 1) % STAGES),
                                               k_ptr + t.to(gl.int64)[:, None] * stride_kt + offs_d[None, :],
                                               mask=(t < t_end)[:, None])
        async_copy.commit_group()
        t_o = t0 + offs_to
        k_scale = gl.load(ks_ptr + t_o, mask=t_o < T, other=0.0)    # issued before the wait: hidden by the MMA
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        # ReLU that keeps NaN (a NaN operand gives a NaN score, ranked last by the selection), times the weight
        x = gl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
        # head h of a query = 8 * (h // 8) + 2 * lane + (h % 2) for a lane of the quad: sum a thread's 16 heads
        # into one partial a (key, query), move the quad's 4 partials of a (key, query) into one lane, add them
        part = gl.sum(gl.reshape(gl.permute(gl.reshape(x, [BT, BQ, HI // 8, 4, 2]), (0, 1, 3, 2, 4)),
                                 [BT, BQ, 4, HI // 4]), axis=3)
        # then (p0 + p2) + (p1 + p3) over the partials p_l of lanes l: the order of Triton's butterfly (xor 2, then
        # xor 1), so that the sums are bit for bit those of the Triton walk (the packed walks' and the bf16 one's)
        p_lo, p_hi = gl.split(gl.permute(gl.reshape(gl.convert_layout(part, quad_l), [BT, BQ, 2, 2]), (0, 1, 3, 2)))
        s_0, s_1 = gl.split(p_lo + p_hi)
        sc = gl.convert_layout(s_0 + s_1, out_l, assert_trivial=True)
        sc = sc * k_scale[:, None]              # exact: a power of two (NaN for a non-finite key)
        vals = gl.where(t_o[:, None] < nvis[None, :], sc, float("-inf"))
        gl.store(out_rows + t_o[:, None], vals, mask=(t_o < t_end)[:, None] & q_ok[None, :])
    async_copy.wait_group(0)


def score_chunk_fp8_gluon(q8: torch.Tensor, q_scale: torch.Tensor, w: torch.Tensor, k8: torch.Tensor,
                          k_scale: torch.Tensor, out: torch.Tensor, *, s_first: int, ratio: int) -> None:
    """kernel.score_chunk_fp8 on unpacked rows where gluon_walk_fits (the caller checks the operands)."""
    n = q8.shape[0]
    BQ = GLUON_BLOCK_QUERIES
    _score_fp8_gluon[(triton.cdiv(n, BQ),)](
        q8, q_scale, w, k8, k_scale, out, s_first, n, k8.shape[0], q8.stride(0), w.stride(0), k8.stride(0),
        out.stride(0), RATIO=ratio, HI=GLUON_HEADS, DI=GLUON_DIM, BQ=BQ, BT=SCORE_TILE_KEYS, STAGES=GLUON_STAGES,
        num_warps=GLUON_WARPS)
