"""Probe: the FP8 score walk (unpacked rows) in Gluon, with the head sum's result deduplicated across the quad."""
import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.language.nvidia.ampere import async_copy


@gluon.jit
def score_fp8_kernel(q_ptr, qs_ptr, w_ptr, k_ptr, ks_ptr, out_ptr, s_first, n_q, T,
                     stride_qs, stride_ws, stride_kt, stride_os,
                     RATIO: gl.constexpr, HI: gl.constexpr, DI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr,
                     STAGES: gl.constexpr):
    N: gl.constexpr = BQ * HI
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 32])
    ld: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    q_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([N, DI], gl.float8e4nv)
    k_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BT, DI], gl.float8e4nv)
    # [BT keys, BQ queries], one element a thread: lanes 0-1 of a quad pick the query, the rest as the MMA's rows
    out_l: gl.constexpr = gl.DistributedLinearLayout(reg_bases=[[8, 0]],
                                                     lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
                                                     warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[BT, BQ])
    # [BT, BQ, 4 partial head sums]: the partials of one (key, query) in one thread, the quad's lanes pick the query
    quad_l: gl.constexpr = gl.DistributedLinearLayout(reg_bases=[[8, 0, 0], [0, 0, 1], [0, 0, 2]],
                                                      lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
                                                      warp_bases=[[16, 0, 0], [32, 0, 0]], block_bases=[], shape=[BT, BQ, 4])
    pid = gl.program_id(0)
    q0 = pid * BQ
    # the block's (query, head) rows of q, once, to shared memory as the MMA's B operand ([N, DI], K-major)
    offs_n = gl.arange(0, N, layout=gl.SliceLayout(1, ld))
    offs_d = gl.arange(0, DI, layout=gl.SliceLayout(0, ld))
    qrow = q0 + offs_n // HI
    qv = gl.load(q_ptr + qrow.to(gl.int64)[:, None] * stride_qs + (offs_n % HI)[:, None] * DI + offs_d[None, :],
                 mask=(qrow < n_q)[:, None], other=0.0)
    q_smem = gl.allocate_shared_memory(gl.float8e4nv, [N, DI], q_sl, qv)
    # head weights times the query scales, in the accumulator's column layout
    offs_w = gl.arange(0, N, layout=gl.SliceLayout(0, mma))
    qrow_w = q0 + offs_w // HI
    ok_w = qrow_w < n_q
    w = gl.load(w_ptr + qrow_w.to(gl.int64) * stride_ws + offs_w % HI, mask=ok_w, other=0.0)
    w = w * gl.load(qs_ptr + qrow_w.to(gl.int64) * HI + offs_w % HI, mask=ok_w, other=1.0)

    offs_q = gl.arange(0, BQ, layout=gl.SliceLayout(0, out_l))
    q_ok = q0 + offs_q < n_q
    nvis = gl.where(q_ok, (s_first + q0 + offs_q + 1) // RATIO, 0)
    out_rows = out_ptr + (q0 + offs_q).to(gl.int64)[None, :] * stride_os
    t_end = (s_first + gl.minimum(q0 + BQ, n_q)) // RATIO
    n_tiles = gl.cdiv(t_end, BT)
    offs_tk = gl.arange(0, BT, layout=gl.SliceLayout(0, out_l) if False else gl.SliceLayout(1, ld))
    offs_to = gl.arange(0, BT, layout=gl.SliceLayout(1, out_l))
    k_smem = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, BT, DI], k_sl)
    for i in gl.static_range(STAGES - 1):
        t = i * BT + offs_tk
        async_copy.async_copy_global_to_shared(k_smem.index(i), k_ptr + t.to(gl.int64)[:, None] * stride_kt + offs_d[None, :],
                                               mask=(t < t_end)[:, None])
        async_copy.commit_group()
    fence_async_shared()
    acc = gl.zeros([BT, N], gl.float32, layout=mma)
    for j in range(n_tiles):
        async_copy.wait_group(STAGES - 2)   # tile j is in (the membar pass adds the CTA barrier after it)
        acc = warpgroup_mma(k_smem.index(j % STAGES), q_smem.permute((1, 0)), acc, use_acc=False, is_async=True)
        # the next load goes to the stage tile j - 1 used: its MMA is done (waited last iteration, then the barrier)
        t = (j + STAGES - 1) * BT + offs_tk
        async_copy.async_copy_global_to_shared(k_smem.index((j + STAGES - 1) % STAGES),
                                               k_ptr + t.to(gl.int64)[:, None] * stride_kt + offs_d[None, :],
                                               mask=(t < t_end)[:, None])
        async_copy.commit_group()
        t_o = j * BT + offs_to
        k_scale = gl.load(ks_ptr + t_o, mask=t_o < T, other=0.0)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        x = gl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
        # heads: bit 0 and bits 3-5 inside a thread, bits 1-2 across the quad's lanes
        part = gl.sum(gl.reshape(gl.permute(gl.reshape(x, [BT, BQ, HI // 8, 4, 2]), (0, 1, 3, 2, 4)), [BT, BQ, 4, HI // 4]),
                      axis=3)
        part = gl.convert_layout(part, quad_l)
        sc = gl.convert_layout(gl.sum(part, axis=2), out_l, assert_trivial=True)
        sc = sc * k_scale[:, None]
        vals = gl.where(t_o[:, None] < nvis[None, :], sc, float("-inf"))
        keep = (t_o < t_end)[:, None] & q_ok[None, :]
        gl.store(out_rows + t_o[:, None], vals, mask=keep)
    async_copy.wait_group(0)


def score_chunk_fp8_gluon(q8, q_scale, w, k8, k_scale, out, *, s_first, ratio, stages=3, **opts):
    n, HI, DI = q8.shape
    T = k8.shape[0]
    BQ = 256 // HI
    grid = (triton.cdiv(n, BQ),)
    score_fp8_kernel[grid](q8, q_scale, w, k8, k_scale, out, s_first, n, T, q8.stride(0), w.stride(0), k8.stride(0),
                           out.stride(0), RATIO=ratio, HI=HI, DI=DI, BQ=BQ, BT=64, STAGES=stages, num_warps=4, **opts)


def score_chunk_fp8_or_gluon(q8, q_scale, w, k8, k_scale, out, *, s_first, ratio, seg=None):
    """The forwards' score op with the Gluon walk where it applies (unpacked, 64 heads x 128 dims, FP8)."""
    from kernels_triton.indexer import kernel as K
    if seg is None and q8.dtype == torch.float8_e4m3fn and tuple(q8.shape[1:]) == (64, 128) and q8.shape[0] > 0:
        score_chunk_fp8_gluon(q8, q_scale, w, k8, k_scale, out, s_first=s_first, ratio=ratio)
    else:
        K.score_chunk_fp8(q8, q_scale, w, k8, k_scale, out, s_first=s_first, ratio=ratio, seg=seg)
