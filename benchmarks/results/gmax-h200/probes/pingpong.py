"""Probe: the FP8 score walk as a ping-pong of two consumer warpgroups (one CTA, 8 queries), keys and queries
by TMA from a producer warp, the consumers' MMA issue order fixed by mbarriers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (tma, mbarrier, warpgroup_mma, warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels_triton.indexer.score_gluon import _quad_partials_layout, _scores_layout

HI = 64
DI = 128
BQ = 4
BT = 64


@gluon.jit
def _walk_next(p, m, n_tiles, G: gl.constexpr):
    # the tile after tile p + G * m in the phase order: phase p holds tiles p, p + G, p + 2G, ... < n_tiles
    m = m + 1
    wrap = p + G * m >= n_tiles
    return gl.where(wrap, p + 1, p), gl.where(wrap, 0, m)


@gluon.jit
def _pp_producer(q_desc, k_desc, q_smem, k_ring, q_bar, ready, empty, q0, n_tiles,
                 HI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr, G: gl.constexpr):
    # both consumers' (query, head) rows, once
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q0 * HI, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [(q0 + BQ) * HI, 0], q_bar, q_smem.index(1))
    p = 0
    m = 0
    for j in range(n_tiles):
        s = j % STAGES
        # the slot is free once both consumers' MMAs of tile j - STAGES are done (a fresh barrier passes phase 1)
        mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [(p + G * m) * BT, 0], ready.index(s), k_ring.index(s))
        p, m = _walk_next(p, m, n_tiles, G)


@gluon.jit
def _pp_consumer(qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, empty, turn,
                 q0c, s_first, n_q, T, n_tiles, stride_ws, stride_os,
                 RATIO: gl.constexpr, HI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr,
                 STAGES: gl.constexpr, WHICH: gl.constexpr, ORDER: gl.constexpr, G: gl.constexpr):
    N: gl.constexpr = BQ * HI
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 32])
    quad_l: gl.constexpr = _quad_partials_layout(BT, BQ)
    out_l: gl.constexpr = _scores_layout(BT, BQ)
    q0 = q0c + WHICH * BQ

    offs_w = gl.arange(0, N, layout=gl.SliceLayout(0, mma))
    qrow_w = q0 + offs_w // HI
    ok_w = qrow_w < n_q
    w = gl.load(w_ptr + qrow_w.to(gl.int64) * stride_ws + offs_w % HI, mask=ok_w, other=0.0)
    w = w * gl.load(qs_ptr + qrow_w.to(gl.int64) * HI + offs_w % HI, mask=ok_w, other=1.0)

    offs_q = gl.arange(0, BQ, layout=gl.SliceLayout(0, out_l))
    q_ok = q0 + offs_q < n_q
    nvis = gl.where(q_ok, (s_first + q0 + offs_q + 1) // RATIO, 0)
    out_rows = out_ptr + (q0 + offs_q).to(gl.int64)[None, :] * stride_os
    t_end = (s_first + gl.minimum(q0 + BQ, n_q)) // RATIO      # this consumer's own last visible row
    offs_to = gl.arange(0, BT, layout=gl.SliceLayout(1, out_l))
    q_b = q_smem.index(WHICH)
    mbarrier.wait(q_bar, 0)
    acc = gl.zeros([BT, N], gl.float32, layout=mma)
    gm_rows = gm_ptr + (q0 + offs_q).to(gl.int64)[None, :] * (G * BT)
    gmax = gl.full([BT, BQ], float("nan"), gl.float32, layout=out_l)
    p = 0
    m = 0
    for j in range(n_tiles):
        s = j % STAGES
        mbarrier.wait(ready.index(s), (j // STAGES) & 1)
        if ORDER:
            # consumer 0 issues tile j's MMA first, then consumer 1, then consumer 0 tile j + 1, ...
            mbarrier.wait(turn.index(WHICH), (j & 1) ^ (1 - WHICH))
        acc = warpgroup_mma(k_ring.index(s), q_b.permute((1, 0)), acc, use_acc=False, is_async=True)
        if ORDER:
            mbarrier.arrive(turn.index(1 - WHICH), count=1)
        t_o = (p + G * m) * BT + offs_to
        k_scale = gl.load(ks_ptr + t_o, mask=t_o < T, other=0.0)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index(s), count=1)
        x = gl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
        part = gl.sum(gl.reshape(gl.permute(gl.reshape(x, [BT, BQ, HI // 8, 4, 2]), (0, 1, 3, 2, 4)),
                                 [BT, BQ, 4, HI // 4]), axis=3)
        p_lo, p_hi = gl.split(gl.permute(gl.reshape(gl.convert_layout(part, quad_l), [BT, BQ, 2, 2]), (0, 1, 3, 2)))
        s_0, s_1 = gl.split(p_lo + p_hi)
        sc = gl.convert_layout(s_0 + s_1, out_l, assert_trivial=True)
        sc = sc * k_scale[:, None]
        vis = t_o[:, None] < nvis[None, :]
        vals = gl.where(vis, sc, float("-inf"))
        gl.store(out_rows + t_o[:, None], vals, mask=(t_o < t_end)[:, None] & q_ok[None, :])
        if G > 1:
            # the running maximum of group p * BT + r (key row mod G * BT) of each query: max.f32 drops NaN, so
            # the invisible rows (NaN here) do not count and a group of NaN scores stays NaN
            gmax = gl.maximum(gmax, gl.where(vis, sc, float("nan")))
            p_next, m_next = _walk_next(p, m, n_tiles, G)
            if p_next != p:
                gl.store(gm_rows + p * BT + offs_to[:, None], gmax, mask=q_ok[None, :])
                gmax = gl.full([BT, BQ], float("nan"), gl.float32, layout=out_l)
            p = p_next
            m = m_next
        else:
            m = m + 1


@gluon.jit
def _score_fp8_pp(q_desc, qs_ptr, w_ptr, k_desc, ks_ptr, out_ptr, gm_ptr, s_first, n_q, T, stride_ws, stride_os,
                  RATIO: gl.constexpr, HI: gl.constexpr, DI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr,
                  STAGES: gl.constexpr, ORDER: gl.constexpr, CONSUMER_REGS: gl.constexpr, G: gl.constexpr):
    q0c = gl.program_id(0) * (2 * BQ)
    q_smem = gl.allocate_shared_memory(gl.float8e4nv, [2, BQ * HI, DI], q_desc.layout)
    k_ring = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, BT, DI], k_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    # both consumers walk the CTA's tiles (the rows its last query sees); each stores only up to its own
    t_end = (s_first + gl.minimum(q0c + 2 * BQ, n_q)) // RATIO
    n_tiles = gl.cdiv(t_end, BT)
    gl.warp_specialize([
        (_pp_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, empty, turn,
                        q0c, s_first, n_q, T, n_tiles, stride_ws, stride_os, RATIO, HI, BQ, BT, STAGES, 0, ORDER, G)),
        (_pp_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, empty, turn,
                        q0c, s_first, n_q, T, n_tiles, stride_ws, stride_os, RATIO, HI, BQ, BT, STAGES, 1, ORDER, G)),
        (_pp_producer, (q_desc, k_desc, q_smem, k_ring, q_bar, ready, empty, q0c, n_tiles, HI, BQ, BT, STAGES, G)),
    ], [4, 1], [CONSUMER_REGS, 24])


def layouts():
    q_l = gl.NVMMASharedLayout.get_default_for([BQ * HI, DI], gl.float8e4nv)
    k_l = gl.NVMMASharedLayout.get_default_for([BT, DI], gl.float8e4nv)
    return q_l, k_l


def score_chunk_fp8_pp(q8, q_scale, w, k8, k_scale, out, *, s_first, ratio, stages=3, order=True,
                       consumer_regs=240, maxnreg=168, gmax=None):
    n = q8.shape[0]
    q_l, k_l = layouts()
    q_desc = TensorDescriptor.from_tensor(q8.view(n * HI, DI), [BQ * HI, DI], q_l)
    k_desc = TensorDescriptor.from_tensor(k8, [BT, DI], k_l)
    _score_fp8_pp[(triton.cdiv(n, 2 * BQ),)](
        q_desc, q_scale, w, k_desc, k_scale, out, out if gmax is None else gmax, s_first, n, k8.shape[0], w.stride(0), out.stride(0),
        RATIO=ratio, HI=HI, DI=DI, BQ=BQ, BT=BT, STAGES=stages, ORDER=order, CONSUMER_REGS=consumer_regs,
        G=1 if gmax is None else gmax.shape[1] // BT, num_warps=4, maxnreg=maxnreg)


def compile_cpu(stages=3, order=True, consumer_regs=240, maxnreg=168, G=16):
    from kernels_triton._compile import compile_for_target
    q_l, k_l = layouts()
    sig = {"q_desc": f"tensordesc<fp8e4nv[{BQ * HI}, {DI}],{q_l!r}>", "qs_ptr": "*fp32", "w_ptr": "*fp32",
           "k_desc": f"tensordesc<fp8e4nv[{BT}, {DI}],{k_l!r}>", "ks_ptr": "*fp32", "out_ptr": "*fp32", "gm_ptr": "*fp32",
           "s_first": "i32", "n_q": "i32", "T": "i32", "stride_ws": "i32", "stride_os": "i32",
           "RATIO": "constexpr", "HI": "constexpr", "DI": "constexpr", "BQ": "constexpr", "BT": "constexpr",
           "STAGES": "constexpr", "ORDER": "constexpr", "CONSUMER_REGS": "constexpr", "G": "constexpr"}
    const = dict(RATIO=4, HI=HI, DI=DI, BQ=BQ, BT=BT, STAGES=stages, ORDER=order, CONSUMER_REGS=consumer_regs, G=G)
    return compile_for_target(_score_fp8_pp, sig, const, divisible=("qs_ptr", "w_ptr", "ks_ptr", "out_ptr", "gm_ptr",
                                                                   "stride_ws", "stride_os"),
                              num_warps=4, maxnreg=maxnreg)


if __name__ == "__main__":
    import collections
    import re
    import sys
    sys.path.insert(0, "/work/main/tests")
    from ptxas_report import assembled
    lv = compile_cpu(G=int(sys.argv[1]) if len(sys.argv) > 1 else 16)
    ptx = lv["ptx"]
    info, sass = assembled(ptx)
    print(info)
    ops = collections.Counter()
    for l in sass:
        m = re.match(r"\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", l)
        if m:
            ops[m.group(1).split(".")[0]] += 1
    print(sorted(ops.items(), key=lambda x: -x[1])[:40])
    open("/tmp/pp.ptx", "w").write(ptx)
    open("/tmp/pp.sass", "w").write("\n".join(sass))
