"""Experimental variants of the FP8 score kernel (unpacked rows only): BQ, direct stores."""
import triton
import triton.language as tl
from kernels_triton.varlen.kernel import visible_tiles

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _store_f32(ptrs, values, mask):
    tl.inline_asm_elementwise("{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.b32 $0, 0; }",
                              "=r,l,r,r", [ptrs, values.to(tl.int32, bitcast=True), mask.to(tl.int32)],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def score_kernel(q_ptr, qs_ptr, w_ptr, k_ptr, ks_ptr, out_ptr, seg_ptr,
                 s_first, n_q, T, stride_qs, stride_ws, stride_kt, stride_os,
                 RATIO: tl.constexpr, HI: tl.constexpr, DI: tl.constexpr, HP: tl.constexpr, DP: tl.constexpr,
                 BQ: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr, QUANT: tl.constexpr,
                 OPERAND: tl.constexpr, VARLEN: tl.constexpr, DIRECT: tl.constexpr,
                 EPI: tl.constexpr = 1, TMA: tl.constexpr = 0, WRELOAD: tl.constexpr = 0,
                 SPLIT: tl.constexpr = 0):
    pid = tl.program_id(0)
    q0 = pid * BQ
    N: tl.constexpr = BQ * HP
    offs_n = tl.arange(0, N)
    qi = offs_n // HP
    hi = offs_n % HP
    offs_d = tl.arange(0, DP)
    qrow = q0 + qi
    qvalid = qrow < n_q
    q_ptrs = q_ptr + qrow.to(tl.int64)[None, :] * stride_qs + hi[None, :] * DI + offs_d[:, None]
    qT = tl.load(q_ptrs, mask=qvalid[None, :], other=0.0)
    w = tl.load(w_ptr + qrow.to(tl.int64) * stride_ws + hi, mask=qvalid, other=0.0).to(tl.float32)
    w = w * tl.load(qs_ptr + qrow.to(tl.int64) * HI + hi, mask=qvalid, other=1.0)
    qT = qT.to(tl.float8e4nv)
    offs_bq = tl.arange(0, BQ)
    q_ok = q0 + offs_bq < n_q
    lo, nvis, t_start, t_end = visible_tiles(seg_ptr, s_first, q0, offs_bq, q_ok, n_q, T, RATIO, BQ, BT, False)
    out_rows = out_ptr + (q0 + offs_bq).to(tl.int64)[None, :] * stride_os
    ks_next = tl.load(ks_ptr + t_start + tl.arange(0, BT), mask=t_start + tl.arange(0, BT) < T, other=0.0)
    tot = tl.zeros((BT, N), tl.float32)
    w_ptrs = w_ptr + qrow.to(tl.int64) * stride_ws + hi
    t_mid = t_start
    if SPLIT:
        # tiles every valid query of the block sees whole: no key mask, no causal mask, a loop-invariant store mask
        t_mid = tl.maximum((tl.min(tl.where(q_ok, nvis, T), axis=0) // BT) * BT, t_start)
        smask = (tl.arange(0, BT) >= 0)[:, None] & q_ok[None, :]
        for t0 in range(t_start, t_mid, BT):
            kp = k_ptr + (t0 + tl.arange(0, BT)).to(tl.int64)[:, None] * stride_kt + offs_d[None, :]
            op = out_rows + (t0 + tl.arange(0, BT))[:, None]
            kt = tl.load(kp)
            acc = tl.dot(kt, qT)
            k_scale = ks_next
            ks_next = tl.load(ks_ptr + BT + t0 + tl.arange(0, BT))
            acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
            sc = tl.sum(tl.reshape(acc, (BT, BQ, HP)), axis=2) * k_scale[:, None]
            _store_f32(op, sc, smask)
    for t0 in range(t_mid, t_end, BT):
        offs_t = t0 + tl.arange(0, BT)
        if TMA:
            kt = k_ptr.load([t0, 0])
        else:
            k_ptrs = k_ptr + offs_t.to(tl.int64)[:, None] * stride_kt + offs_d[None, :]
            kt = tl.load(k_ptrs, mask=(offs_t < T)[:, None], other=0.0)
        if EPI == 2:
            tot = tl.dot(kt, qT, tot)
        else:
            acc = tl.dot(kt, qT)
            if WRELOAD:
                w = tl.load(w_ptrs, mask=qvalid, other=0.0) * tl.load(qs_ptr + qrow.to(tl.int64) * HI + hi, mask=qvalid, other=1.0)
            k_scale = ks_next
            ks_next = tl.load(ks_ptr + BT + offs_t, mask=BT + offs_t < T, other=0.0)
            if EPI == 1:
                acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
            sc = tl.sum(tl.reshape(acc, (BT, BQ, HP)), axis=2)
            sc = sc * k_scale[:, None]
            vis = offs_t[:, None] < nvis[None, :]
            val = tl.where(vis, sc, NEG_INF)
            msk = (offs_t < t_end)[:, None] & q_ok[None, :]
            if DIRECT:
                _store_f32(out_rows + offs_t[:, None], val, msk)
            else:
                tl.store(out_rows + offs_t[:, None], val, mask=msk)
    if EPI == 2:
        sc = tl.sum(tl.reshape(tot, (BT, BQ, HP)), axis=2)
        tl.store(out_rows + tl.arange(0, BT)[:, None], sc, mask=q_ok[None, :])


@triton.jit
def _epi(acc, w, ks, t0, nvis, q_ok, t_end, out_rows, valid, BT: tl.constexpr, BQH: tl.constexpr, HP: tl.constexpr):
    acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL) * w[None, :]
    sc = tl.sum(tl.reshape(acc, (BT, BQH, HP)), axis=2) * ks[:, None]
    offs_t = t0 + tl.arange(0, BT)
    val = tl.where(offs_t[:, None] < nvis[None, :], sc, NEG_INF)
    msk = ((offs_t < t_end) & valid)[:, None] & q_ok[None, :]
    _store_f32(out_rows + offs_t[:, None], val, msk)


@triton.jit
def score_kernel_pp(q_ptr, qs_ptr, w_ptr, k_ptr, ks_ptr, out_ptr,
                    s_first, n_q, T, stride_qs, stride_ws, stride_kt, stride_os,
                    RATIO: tl.constexpr, HI: tl.constexpr, DI: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr):
    """Two halves of the (query, head) columns, each MMA in flight while the other half's epilogue runs:
    iteration i issues a(i) after E(a(i-1)) and b(i) after E(b(i-1))."""
    BQH: tl.constexpr = BQ // 2
    NH: tl.constexpr = BQH * HI
    pid = tl.program_id(0)
    q0 = pid * BQ
    offs_n = tl.arange(0, NH)
    qi = offs_n // HI
    hi = offs_n % HI
    offs_d = tl.arange(0, DI)
    qra = q0 + qi
    qrb = q0 + BQH + qi
    oka = qra < n_q
    okb = qrb < n_q
    qTa = tl.load(q_ptr + qra.to(tl.int64)[None, :] * stride_qs + hi[None, :] * DI + offs_d[:, None], mask=oka[None, :], other=0.0)
    qTb = tl.load(q_ptr + qrb.to(tl.int64)[None, :] * stride_qs + hi[None, :] * DI + offs_d[:, None], mask=okb[None, :], other=0.0)
    wa = tl.load(w_ptr + qra.to(tl.int64) * stride_ws + hi, mask=oka, other=0.0) * tl.load(qs_ptr + qra.to(tl.int64) * HI + hi, mask=oka, other=1.0)
    wb = tl.load(w_ptr + qrb.to(tl.int64) * stride_ws + hi, mask=okb, other=0.0) * tl.load(qs_ptr + qrb.to(tl.int64) * HI + hi, mask=okb, other=1.0)
    offs_h = tl.arange(0, BQH)
    pa = q0 + offs_h
    pb = q0 + BQH + offs_h
    qoka = pa < n_q
    qokb = pb < n_q
    nva = tl.where(qoka, (s_first + pa + 1) // RATIO, 0)
    nvb = tl.where(qokb, (s_first + pb + 1) // RATIO, 0)
    t_end = (s_first + tl.minimum(q0 + BQ, n_q)) // RATIO
    outa = out_ptr + pa.to(tl.int64)[None, :] * stride_os
    outb = out_ptr + pb.to(tl.int64)[None, :] * stride_os
    a_prev = tl.zeros((BT, NH), tl.float32)
    b_prev = tl.zeros((BT, NH), tl.float32)
    ks_prev = tl.zeros((BT,), tl.float32)
    for t0 in range(0, t_end, BT):
        offs_t = t0 + tl.arange(0, BT)
        kt = tl.load(k_ptr + offs_t.to(tl.int64)[:, None] * stride_kt + offs_d[None, :], mask=(offs_t < T)[:, None], other=0.0)
        ks = tl.load(ks_ptr + offs_t, mask=offs_t < T, other=0.0)
        _epi(a_prev, wa, ks_prev, t0 - BT, nva, qoka, t_end, outa, t0 > 0, BT, BQH, HI)
        a_new = tl.dot(kt, qTa)
        _epi(b_prev, wb, ks_prev, t0 - BT, nvb, qokb, t_end, outb, t0 > 0, BT, BQH, HI)
        b_new = tl.dot(kt, qTb)
        a_prev = a_new
        b_prev = b_new
        ks_prev = ks
    t_last = ((t_end + BT - 1) // BT - 1) * BT
    _epi(a_prev, wa, ks_prev, t_last, nva, qoka, t_end, outa, t_end > 0, BT, BQH, HI)
    _epi(b_prev, wb, ks_prev, t_last, nvb, qokb, t_end, outb, t_end > 0, BT, BQH, HI)
