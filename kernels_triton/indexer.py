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
     top K; for i.i.d. scores about P*ln2 = 1.4K elements, whatever the row length;
   - pass 2 compacts those candidates (order key, index) in index order;
   - the K-th largest key among them is found by bisecting its 32 bits (32 counts, no
     sort), then everything above it and the first ties in index order are written.
   Rows of <= CAP visible entries skip the passes. If more than CAP values tie above
   tau (adversarial input), the same bisection streams over the whole row (34 passes):
   slow but always right. Two reads of the visible scores in all.
   (Measured: writing group maxima from the score kernel to skip pass 1 cost the score
   kernel more than it saved: keys are on the MMA's M axis, so any max over keys
   crosses warps. See docs/performance.md.)
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---------------------------------------------------------------------------------------
# score kernel
@triton.jit
def _score_kernel(q_ptr, w_ptr, k_ptr, out_ptr,
                  s_first, n_q, T,
                  stride_qs, stride_ws, stride_kt, stride_os,
                  RATIO: tl.constexpr, HI: tl.constexpr, DI: tl.constexpr,
                  BQ: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    q0 = pid * BQ
    N: tl.constexpr = BQ * HI
    offs_n = tl.arange(0, N)
    qi = offs_n // HI
    hi = offs_n % HI
    offs_d = tl.arange(0, DI)
    qrow = q0 + qi
    qvalid = qrow < n_q
    # q^T as [DI, N]: loaded once, reused for every key tile
    q_ptrs = q_ptr + qrow.to(tl.int64)[None, :] * stride_qs + hi[None, :] * DI + offs_d[:, None]
    qT = tl.load(q_ptrs, mask=qvalid[None, :], other=0.0)
    w = tl.load(w_ptr + qrow.to(tl.int64) * stride_ws + hi, mask=qvalid, other=0.0).to(tl.float32)

    offs_bq = tl.arange(0, BQ)
    pos = s_first + q0 + offs_bq                       # global positions of this program's queries
    nvis = tl.where(q0 + offs_bq < n_q, (pos + 1) // RATIO, 0)
    last = tl.minimum(q0 + BQ, n_q) - 1
    t_end = (s_first + last + 1) // RATIO             # rows the last (most-seeing) query sees
    out_rows = out_ptr + (q0 + offs_bq).to(tl.int64)[None, :] * stride_os
    row_ok = (q0 + offs_bq < n_q)[None, :]
    for t0 in range(0, t_end, BT):
        offs_t = t0 + tl.arange(0, BT)
        kt = tl.load(k_ptr + offs_t.to(tl.int64)[:, None] * stride_kt + offs_d[None, :],
                     mask=(offs_t < T)[:, None], other=0.0)
        if IEEE:
            acc = tl.dot(kt, qT, input_precision="ieee")
        else:
            acc = tl.dot(kt, qT)                        # [BT, N] fp32 on tensor cores
        acc = tl.maximum(acc, 0.0) * w[None, :]
        sc = tl.sum(tl.reshape(acc, (BT, BQ, HI)), axis=2)   # head sum: within a thread + quad
        vis = offs_t[:, None] < nvis[None, :]           # causal mask from indices (diagonal tiles)
        sc = tl.where(vis, sc, NEG_INF)
        tl.store(out_rows + offs_t[:, None], sc, mask=row_ok & (offs_t[:, None] < t_end))


# ---------------------------------------------------------------------------------------
# selection kernel
@triton.jit
def _order_key(x):
    # fp32 -> int32 whose signed order is the float order (-0.0 folded onto +0.0 first)
    x = x + 0.0
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b >= 0, b, b ^ 0x7FFFFFFF)


@triton.jit
def _kth_largest_key(u, k):
    # u: int64 keys biased to [0, 2^32) (-1 = no value). Bisect, bit by bit from the top,
    # the largest v with #(u >= v) >= k: the k-th largest key. 32 counts, no sort.
    v = tl.full([], 0, tl.int64)
    for i in range(32):
        probe = v + (tl.full([], 1, tl.int64) << (31 - i))
        n = tl.sum((u >= probe).to(tl.int32), axis=0)
        v = tl.where(n >= k, probe, v)
    return v


@triton.jit
def _write_topk(u, idx, k, orow, idx_offset):
    # The k largest of u (candidates in index order, -1 = none), ties to the smaller index:
    # all above the k-th key, then the first ties in index order. Output order is free.
    v = _kth_largest_key(u, k)
    need = k - tl.sum((u > v).to(tl.int32), axis=0)
    eq = u == v
    take = (u > v) | (eq & (tl.cumsum(eq.to(tl.int32), axis=0) <= need))
    slot = tl.cumsum(take.to(tl.int32), axis=0) - 1
    tl.store(orow + slot, idx + idx_offset, mask=take)


@triton.jit
def _select_kernel(sc_ptr, cand_ptr, out_ptr,
                   s_first, n_q, k_eff, idx_offset,
                   stride_s, stride_c, stride_o,
                   RATIO: tl.constexpr, CAP: tl.constexpr, W: tl.constexpr, WP: tl.constexpr):
    r = tl.program_id(0)
    row = sc_ptr + r.to(tl.int64) * stride_s
    cand = cand_ptr + r.to(tl.int64) * stride_c
    orow = out_ptr + r.to(tl.int64) * stride_o
    s = s_first + r                                     # the query's position
    L = (s + 1) // RATIO                                # visible rows of this query
    if W > 0:
        # the key list starts with the sliding window max(0, s-W+1)..s, -1 padded
        wj = tl.arange(0, WP)
        wid = tl.maximum(s - W + 1, 0) + wj
        tl.store(orow + wj, tl.where(wid > s, -1, wid), mask=wj < W)
        orow += W
    offs = tl.arange(0, CAP)
    if L <= k_eff:
        # every visible row is selected; the rest is -1
        tl.store(orow + offs, tl.where(offs < L, offs + idx_offset, -1), mask=offs < k_eff)
    else:
        if L <= CAP:
            x = tl.load(row + offs, mask=offs < L, other=NEG_INF)
            u = tl.where(offs < L, _order_key(x).to(tl.int64) + 2147483648, -1)
            _write_topk(u, offs, k_eff, orow, idx_offset)
        else:
            # pass 1: the max of CAP strided groups (element i joins group i % CAP; all
            # non-empty since L > CAP), two blocks in flight per iteration
            gm = tl.full([CAP], NEG_INF, tl.float32)
            for b0 in range(0, L, 2 * CAP):
                x1 = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
                x2 = tl.load(row + b0 + CAP + offs, mask=b0 + CAP + offs < L, other=NEG_INF)
                gm = tl.maximum(gm, tl.maximum(x1, x2))
            # tau: the K-th largest group max, a lower bound of the row's K-th largest value
            tau = _kth_largest_key(_order_key(gm).to(tl.int64) + 2147483648, k_eff) - 2147483648
            # pass 2: compact every x >= tau (a superset of the top K), in index order
            cnt = tl.full([], 0, tl.int32)
            for b0 in range(0, L, CAP):
                x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
                key = _order_key(x)
                keep = (key >= tau) & (b0 + offs < L)
                nk = tl.sum(keep.to(tl.int32), axis=0)
                if nk > 0:
                    slot = cnt + tl.cumsum(keep.to(tl.int32), axis=0) - 1
                    packed = (key.to(tl.int64) << 32) | (b0 + offs).to(tl.int64)
                    tl.store(cand + slot, packed, mask=keep & (slot < CAP))
                cnt += nk
            if cnt <= CAP:
                c = tl.load(cand + offs, mask=offs < cnt, other=0)
                u = tl.where(offs < cnt, (c >> 32) + 2147483648, -1)
                _write_topk(u, (c & 0x7FFFFFFF).to(tl.int32), k_eff, orow, idx_offset)
            else:
                _select_exact(row, orow, L, k_eff, idx_offset, CAP)

@triton.jit
def _select_exact(row, orow, L, k_eff, idx_offset, BLK: tl.constexpr):
    # Exact fallback: bisect the K-th largest order key bit by bit (keys biased to
    # [0, 2^32) in int64), then take everything above it and the first ties in
    # index order.
    offs = tl.arange(0, BLK)
    v = tl.full([], 0, tl.int64)
    for i in range(32):
        probe = v + (tl.full([], 1, tl.int64) << (31 - i))
        n = tl.full([], 0, tl.int32)
        for b0 in range(0, L, BLK):
            x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
            u = _order_key(x).to(tl.int64) + 2147483648
            n += tl.sum(((u >= probe) & (b0 + offs < L)).to(tl.int32), axis=0)
        v = tl.where(n >= k_eff, probe, v)
    n_gt = tl.full([], 0, tl.int32)
    for b0 in range(0, L, BLK):
        x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
        u = _order_key(x).to(tl.int64) + 2147483648
        n_gt += tl.sum(((u > v) & (b0 + offs < L)).to(tl.int32), axis=0)
    need_eq = k_eff - n_gt
    wr = tl.full([], 0, tl.int32)
    eq_seen = tl.full([], 0, tl.int32)
    for b0 in range(0, L, BLK):
        x = tl.load(row + b0 + offs, mask=b0 + offs < L, other=NEG_INF)
        u = _order_key(x).to(tl.int64) + 2147483648
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
SCORE_TILE_KEYS = 64     # BT: keys per MMA tile (M)
SCORE_WARPS = 8
SCORE_STAGES = 3
SELECT_WARPS = 4


def score_block_queries(heads: int) -> int:
    """BQ: queries per score program, so that N = BQ * HI = 256 (the widest wgmma)."""
    return max(1, 256 // heads)


def select_capacity(topk: int) -> int:
    """CAP: candidates sorted per row (power of two >= 2K; also the group count P)."""
    return max(16, 1 << (2 * topk - 1).bit_length())


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
    if topk > 8192:
        raise ValueError(f"topk = {topk} > 8192 is not supported by the Triton selection (its candidate sort "
                         f"holds 2*topk values per row); use topk <= 8192")
    ok = (torch.bfloat16, torch.float32) if allow_fp32 else (torch.bfloat16,)
    if idx_q.dtype not in ok or idx_k.dtype not in ok:
        raise TypeError(f"idx_q and idx_k must be bfloat16 (got {idx_q.dtype}, {idx_k.dtype}); "
                        f"convert with .to(torch.bfloat16)")
    if idx_q.dtype != idx_k.dtype:
        raise TypeError(f"idx_q ({idx_q.dtype}) and idx_k ({idx_k.dtype}) must share a dtype")
    if idx_w.dtype != torch.float32:
        raise TypeError(f"idx_w must be float32, got {idx_w.dtype}; convert with .float()")
    if HI & (HI - 1) or HI > 256:
        raise ValueError(f"indexer heads HI = {HI} must be a power of two <= 256 for the Triton score kernel "
                         f"(it tiles (query, head) pairs 256 wide); pad the heads with zero weights")
    if DI & (DI - 1) or not 16 <= DI <= 256:
        raise ValueError(f"indexer dim DI = {DI} must be a power of two in [16, 256] for the Triton score kernel")
    for name, t in (("idx_q", idx_q), ("idx_w", idx_w), ("idx_k", idx_k)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() on it")
    dev = idx_q.device
    if idx_w.device != dev or idx_k.device != dev:
        raise ValueError(f"idx_q, idx_w, idx_k must be on one device, got {idx_q.device}, {idx_w.device}, "
                         f"{idx_k.device}")
    if require_cuda and dev.type != "cuda" and not interpreting():
        raise ValueError(f"the Triton indexer needs CUDA tensors (got {dev}); on a CPU use the reference "
                         f"(csa_dsl.indexer_topk(..., backend='reference')) or set TRITON_INTERPRET=1 for tests")
    return B, S, HI, DI, T


def score_chunk(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, s_first: int, ratio: int,
                out: torch.Tensor) -> None:
    """Scores of queries [s_first, s_first + n) against their visible rows into out[:n, :ld] (fp32).

    q [n, HI, DI], w [n, HI], k [T, DI] (one batch element), out [>= n, ld] with
    ld >= the visible rows of the last query. Columns beyond a row's own visible
    count but inside the tile range are -inf; further columns are not written.
    """
    n, HI, DI = q.shape
    T = k.shape[0]
    BQ = score_block_queries(HI)
    grid = (triton.cdiv(n, BQ),)
    _score_kernel[grid](q, w, k, out, s_first, n, T, q.stride(0), w.stride(0), k.stride(0), out.stride(0),
                        RATIO=ratio, HI=HI, DI=DI, BQ=BQ, BT=SCORE_TILE_KEYS, IEEE=(q.dtype == torch.float32),
                        num_warps=SCORE_WARPS, num_stages=SCORE_STAGES)


def select_chunk(scores: torch.Tensor, s_first: int, n: int, ratio: int, k_eff: int, topk: int,
                 out: torch.Tensor, idx_offset: int = 0, window: int = 0,
                 cand: Optional[torch.Tensor] = None) -> None:
    """Key lists of rows [0, n) of a score chunk: out[:n, :window] = the sliding window ids,
    out[:n, window:window + k_eff] = the top-k_eff visible rows + idx_offset (int32, -1 padded)."""
    cap = select_capacity(topk)
    if cand is None:
        cand = torch.empty(n, cap, dtype=torch.int64, device=scores.device)
    _select_kernel[(n,)](scores, cand, out, s_first, n, k_eff, idx_offset,
                         scores.stride(0), cand.stride(0), out.stride(0),
                         RATIO=ratio, CAP=cap, W=window, WP=_window_pow2(window), num_warps=SELECT_WARPS)


def _window_pow2(window: int) -> int:
    return max(1, 1 << (max(window, 1) - 1).bit_length())


def _score_ld(T: int) -> int:
    return max(SCORE_TILE_KEYS, triton.cdiv(T, SCORE_TILE_KEYS) * SCORE_TILE_KEYS)


def chunk_buffer_bytes(chunk: int, T: int, topk: int) -> dict:
    """The bounded scratch of one query chunk: fp32 scores and int64 top-k candidates."""
    return {"scores": chunk * _score_ld(T) * 4, "cand": chunk * select_capacity(topk) * 8}


def chunk_buffers(chunk: int, T: int, topk: int, device) -> dict:
    return {
        "scores": torch.empty(chunk, _score_ld(T), dtype=torch.float32, device=device),
        "cand": torch.empty(chunk, select_capacity(topk), dtype=torch.int64, device=device),
    }


def default_chunk(T: int) -> int:
    """Queries per chunk for the standalone indexer: a score buffer of at most 256 MiB (so the
    scratch stays well under 1 GiB at S = 262,144), but never under 1,024 queries (256 score
    programs: about one full wave on 132 SMs)."""
    return max(1024, min(2048, (1 << 26) // _score_ld(T)))


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 chunk: Optional[int] = None, progress=None) -> torch.Tensor:
    """[B, S, min(topk, T)] int32 selected row ids (-1 padded), never holding more than one chunk's scores."""
    B, S, HI, DI, T = check_indexer_shapes(idx_q, idx_w, idx_k, topk, ratio, allow_fp32=interpreting())
    k_eff = min(topk, T)
    out = torch.empty(B, S, k_eff, dtype=torch.int32, device=idx_q.device)
    if k_eff == 0:
        return out
    chunk = max(1, min(chunk or default_chunk(T), S))
    buf = chunk_buffers(chunk, T, topk, idx_q.device)
    for b in range(B):
        for s0 in range(0, S, chunk):
            n = min(chunk, S - s0)
            score_chunk(idx_q[b, s0:s0 + n], idx_w[b, s0:s0 + n], idx_k[b], s0, ratio, buf["scores"])
            select_chunk(buf["scores"], s0, n, ratio, k_eff, topk, out[b, s0:s0 + n], cand=buf["cand"])
            if progress is not None:
                progress(n)
    return out


# ---------------------------------------------------------------------------------------
# IR without a GPU
@functools.lru_cache(maxsize=None)  # compiled once per process and argument set
def compile_ir(kernel: str = "score", heads: int = 64, dim: int = 128, ratio: int = 4, topk: int = 512,
               window: int = 0, arch: int = 90) -> dict:
    """Compile one indexer kernel for GPUTarget('cuda', arch, 32) on any machine: {ttir, ttgir, llir, ptx}."""
    from ._compile import compile_for_target
    from .compressor import _kernels_interpreted, compile_ir_elsewhere

    if _kernels_interpreted(_score_kernel):  # TRITON_INTERPRET=1 at import: compile in a child process
        return compile_ir_elsewhere("kernels_triton.indexer", dict(kernel=kernel, heads=heads, dim=dim, ratio=ratio,
                                                                   topk=topk, window=window, arch=arch))

    if kernel == "score":
        BQ = score_block_queries(heads)
        sig = {"q_ptr": "*bf16", "w_ptr": "*fp32", "k_ptr": "*bf16", "out_ptr": "*fp32",
               "s_first": "i32", "n_q": "i32", "T": "i32",
               "stride_qs": "i32", "stride_ws": "i32", "stride_kt": "i32", "stride_os": "i32",
               "RATIO": "constexpr", "HI": "constexpr", "DI": "constexpr", "BQ": "constexpr", "BT": "constexpr",
               "IEEE": "constexpr"}
        const = {"RATIO": ratio, "HI": heads, "DI": dim, "BQ": BQ, "BT": SCORE_TILE_KEYS, "IEEE": False}
        fn, opts = _score_kernel, {"num_warps": SCORE_WARPS, "num_stages": SCORE_STAGES}
        div = ["q_ptr", "w_ptr", "k_ptr", "out_ptr", "stride_qs", "stride_ws", "stride_kt", "stride_os"]
    elif kernel == "select":
        sig = {"sc_ptr": "*fp32", "cand_ptr": "*i64", "out_ptr": "*i32", "s_first": "i32", "n_q": "i32",
               "k_eff": "i32", "idx_offset": "i32", "stride_s": "i32", "stride_c": "i32", "stride_o": "i32",
               "RATIO": "constexpr", "CAP": "constexpr", "W": "constexpr", "WP": "constexpr"}
        const = {"RATIO": ratio, "CAP": select_capacity(topk), "W": window, "WP": _window_pow2(window)}
        fn, opts = _select_kernel, {"num_warps": SELECT_WARPS}
        div = ["sc_ptr", "cand_ptr", "out_ptr", "stride_s", "stride_c", "stride_o"]
    else:
        raise ValueError(f"unknown indexer kernel {kernel!r}; valid: score, select")
    return compile_for_target(fn, sig, const, div, arch=arch, **opts)
