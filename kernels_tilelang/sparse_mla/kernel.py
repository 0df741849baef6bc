"""Sparse MLA forward (MQA over one latent KV head) in TileLang for Hopper (sm_90a).

Semantics (docs/semantics.md sections 4 and 9; naive.sparse_attention), per (b, s, h):
    logit_j = sm_scale * q[b,s,h,:] . kv[b, idx_j, :]          over valid j
    out     = sum_j exp(logit_j - M) V_j / (sum_j exp(logit_j - M) [+ exp(sink_h - M)])
    lse     = log(denominator)                                  (natural log, fp32)
V_j is the first dim_v dims of kv row idx_j. Index -1 (and any id outside [0, R)) is an
empty slot: never loaded and masked out. A query without a valid key writes zeros
(LSE = sink_h with a sink, -inf without). Non-finite values propagate as in the dense
formula: only an exactly zero denominator writes zeros, a NaN one writes NaN (a NaN row in
the key list, a NaN or +inf sink). One corner differs from the reference: a non-finite q
row with no valid key gives NaN here (the -1 slots' zero rows meet it in the QK^T MMA).

Causal block skipping: the runtime bound (pos0, bound_w, bound_k, bound_m) promises that the key
list of the query at position p = pos0 + row holds at most n(p) = bound_w + min(bound_k,
(p + 1) // bound_m) valid entries, all of them among its first n(p) slots (the composer's lists:
the window part and the selected part each -1 padded at the end). The "ws-bounded" variant walks
only the key blocks under n(p), so an HCA query early in the sequence pays for the rows it sees,
not for the list's width; "ws" walks every block.

Variants of one algorithm, same semantics:
  * "ws": hand warp-specialised. 3 warpgroups per CTA (384 threads):
      WG0 (consumer, 240 regs): S = Q K^T (wgmma), online softmax, P -> smem, O[:, :dv/2] += P V
      WG1 (consumer, 168 regs): O[:, dv/2:] += P V with the P / rescale factors WG0 publishes
      WG2 (producer,  80 regs): cp.async gather of the 64 indexed KV rows per step into a
                                2-stage smem ring; -1 rows are zero-filled, never read
    Synchronisation is entirely mbarrier based (see the table in _build_ws).
  * "seesaw" (the default: DEFAULT_VARIANT): "ws" with the work split evenly. Both consumers compute Q K^T, on
      alternate key blocks, and each accumulates P V over both blocks for its own half of the value dims;
      the running max passes from WG0 to WG1 and back through shared memory, so that one consumer's
      softmax runs under the other's P V (216 registers each, producer 72). With a RoPE tail (576-dim rows)
      the P tiles live in the tail's ring, dead once its Q K^T is done. See _build_seesaw.
  * "ws-bounded": "ws" walking only the key blocks under the causal bound (HCA's lists).
  * "ws-window": "ws-bounded" without a key list (window-only layers): slot j of the query at position p
    is row max(0, p - W + 1) + j (valid while <= p), W = bound_w; Indices is not read.
    ("seesaw-bounded" and "seesaw-window": the same walks on the seesaw split.)
  * "seesaw-ring" (a window of 128 rows on 512-dim rows, V4's window-only layers; "seesaw-ring-seg" for a
    packed batch): a persistent seesaw kernel whose CTAs each run `span` consecutive queries over a ring of
    the window's rows (one row written per query), with the output stored asynchronously. See
    _build_seesaw_ring.
  * "pipelined": one T.Pipelined(num_stages=2) loop, 2 warpgroups, TileLang schedules the
    cp.async gather / wgmma overlap itself. Simpler, most likely correct; kept as a fallback
    and as a cross-check of the "ws" variant.

One CTA handles one query (seesaw-ring: a span of them) and a group of 64 heads (H = 128 -> 2 CTAs per query, adjacent in
launch order so the second CTA's gather of the same rows hits L2). Batch, Sq and R are
dynamic: one compiled kernel per shape class (heads, dims, padded NI, sink, lse, variant).
Global offsets are int64 in the generated code (TileLang widens index math on dynamic
shapes), so S = 262,144 with 128 heads x 576 dims does not overflow.
"""


import functools
import math
import numbers
import os
import threading
import time
from typing import Optional

from kernels_triton.rope import kernel as rope_kernel
from kernels_triton.varlen import kernel as varlen_kernel

from .cost import BLOCK_HEADS, KERNEL_DIM_V   # rows of a wgmma M tile (heads per CTA); value dims produced

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
SUPPORTED_DIM_QK = (512, 576)
VARIANTS = ("ws", "seesaw", "pipelined")          # a user's choice
RING_VARIANTS = ("seesaw-ring", "seesaw-ring-seg")   # the persistent window ring kernel (_build_seesaw_ring)
# the warp-specialised families with the causal bound / the implicit window ids, and the ring
KERNEL_VARIANTS = VARIANTS + ("ws-bounded", "ws-window", "seesaw-bounded", "seesaw-window") + RING_VARIANTS
WS_FAMILIES = ("ws", "seesaw")
# TileLang 0.1.15 fails to lower "seesaw-bounded" for lists of 1 or 2 pairs of key blocks ("[ThreadSync] Cannot
# lower a required shared-memory sync inside a divergent region"); such short lists walk every block ("seesaw")
SEESAW_BOUNDED_MIN_NI = 384
SM90_SMEM_LIMIT = 232448  # 227 KiB opt-in dynamic shared memory per block on H100/H200
TARGET_ARCH = "sm_90a"


# ----------------------------------------------------------------------------------------
# shape-class helpers (pure Python, no TileLang import: used by validation on CPU)
# ----------------------------------------------------------------------------------------
def padded_heads(heads: int) -> int:
    """Heads rounded up to whole 64-row wgmma tiles (H < 64 is padded with zero queries)."""
    return max(BLOCK_HEADS, -(-heads // BLOCK_HEADS) * BLOCK_HEADS)


def padded_num_indices(num_indices: int, block_keys: int = 64) -> int:
    """NI rounded up to two key blocks: both variants walk the list two blocks at a time
    (the ws ring has 2 stages whose index must be a compile-time constant)."""
    step = 2 * block_keys
    return max(step, -(-num_indices // step) * step)


ROPE_TILE = 64             # channels the fused inverse RoPE can rotate: the P tile's key columns
NO_ROPE = (0, 0, False)    # (col0, rot_dim, seg) of the fused inverse RoPE: none


# the variant sparse_mla_fwd runs when none is asked: the seesaw split, for both row widths (as fast or faster than
# "ws" on every shape measured: benchmarks/results/seesaw-h200/ for V4's 512-dim rows, seesaw-tail-h200/ for V3.2's 576)
DEFAULT_VARIANT = "seesaw"


def rope_fusable(dim_v: int, rot_dim: int) -> bool:
    """Whether the ws kernel can rotate the output's last rot_dim of dim_v channels back in its epilogue:
    they must lie in the second half of the kernel's value dims, the half the second consumer warpgroup
    stores (so [dim_v - rot_dim, dim_v) inside [256, 512)), and fit the tile they are rotated into (the
    dead P tile, 64 key columns: rot_dim <= 64). Elsewhere sparse_mla_fwd runs
    kernels_triton's RoPE kernel on the output after the attention (the same bits)."""
    return (0 < rot_dim <= ROPE_TILE and rot_dim % 2 == 0 and dim_v - rot_dim >= KERNEL_DIM_V // 2
            and dim_v <= KERNEL_DIM_V)


def kernel_limits(heads: int, dim_qk: int, dim_v: int) -> Optional[str]:
    """Why this kernel cannot run these sizes (None when it can); checked before any launch or lowering."""
    if heads < 1:
        return f"attention heads = {heads}: must be >= 1"
    if dim_qk not in SUPPORTED_DIM_QK:
        return (f"the sparse MLA kernel takes dim_qk (last dim of q and kv) in {SUPPORTED_DIM_QK}, got {dim_qk} "
                f"(512 latent dims, optionally + 64 RoPE dims, as DeepSeek's MLA); pad q and kv with zero dims "
                f"to 512 or 576 (zeros do not change q.k), or run the reference path")
    if not 1 <= dim_v <= min(dim_qk, KERNEL_DIM_V):
        return (f"dim_v must be in [1, {min(dim_qk, KERNEL_DIM_V)}] (the values are the first dim_v dims of each "
                f"kv row, at most {KERNEL_DIM_V}), got {dim_v}")
    return None


def kernel_dims(dim_qk: int, dim_v: int) -> tuple[int, int]:
    """(dim_qk, kernel dim_v) for a user (dim_qk, dim_v): values are always computed over the
    first 512 dims and sliced, which is exact because V_j is a prefix of the kv row."""
    why = kernel_limits(1, dim_qk, dim_v)
    if why is not None:
        raise ValueError(why)
    return dim_qk, KERNEL_DIM_V


def smem_bytes_estimate(dim_qk: int, dim_v: int, variant: str = "ws", block_keys: int = 64) -> int:
    """Dynamic shared memory of a kernel variant: the shared buffers its builder declares, which is what the
    lowered kernel takes for the warp-specialised families (tests/test_attention_lowering.py checks each). The
    bf16 tiles: Q (and its RoPE tail), the KV stages, the P tiles; fp32 row vectors of BLOCK_HEADS:
      ws        Q + 2 stages + one P tile (WG0's, for WG1) + the rescale and 1/l vectors
      seesaw    Q + 2 stages + two P tiles (one per consumer; on 576-dim rows they live in the stages' dead
                RoPE tails, so they add nothing) + each consumer's two maxima and row sum
      seesaw-ring (512 only) Q + the 128-row ring + two P tiles + two output staging tiles + the maxima and sums
      pipelined Q + 1 stage + P + the output tile; a lower bound: T.Pipelined adds buffers of its own"""
    hb, bf16, f32 = BLOCK_HEADS, 2, 4
    q = hb * dim_qk * bf16
    stage = block_keys * dim_qk * bf16
    p_tile = hb * block_keys * bf16
    chain = (2 * 2 + 2) * hb * f32              # mx_s [consumer, parity, row] and sum_s [consumer, row]
    if variant == "pipelined":
        return q + stage + p_tile + hb * dim_v * bf16
    if variant in RING_VARIANTS:
        return q + 2 * stage + 2 * p_tile + 2 * hb * ROPE_TILE * bf16 + chain
    if variant.partition("-")[0] == "seesaw":
        return q + 2 * stage + (0 if dim_qk > dim_v else 2 * p_tile) + chain
    return q + 2 * stage + p_tile + 2 * hb * f32


# ----------------------------------------------------------------------------------------
# kernel builders
# ----------------------------------------------------------------------------------------
def build_sparse_mla_fwd(heads: int, dim_qk: int, dim_v: int, num_indices_padded: int,
                         with_sink: bool, return_lse: bool, variant: str = "ws",
                         block_keys: int = 64, rope: tuple = NO_ROPE):
    """Return the TileLang prim_func for one shape class.

    heads: a multiple of 64 (pad first, see padded_heads); dim_v: the kernel's value width
    (512); num_indices_padded: a multiple of 2 * block_keys. Batch, Sq and R are dynamic.
    Signature: (Q, KV, Indices, [Sink], Out, [Lse], sm_scale, pos0, bound_w, bound_k, bound_m, span) with
      Q [B, Sq, heads, dim_qk] bf16, KV [B, R, dim_qk] bf16, Indices [IB, ISq, NI] int32
      ([B, Sq, NI]; any [1, 1, NI] for "ws-window", which does not read it),
      Sink [heads] fp32, Out [B, Sq, heads, dim_v] bf16, Lse [B, Sq, heads] fp32,
      RopeCos, RopeSin [P, RT] fp32, Seg [NS, 4] int32 (read only with the fused inverse RoPE),
      sm_scale fp32 and the int32 bound (runtime arguments: they do not key the cache), and span, the
      queries per CTA of "seesaw-ring" (ring_span; the other variants run one query a CTA and ignore it).
    rope = (col0, rot_dim, seg): the ws variants rotate the output's channels [col0, col0 + rot_dim)
    back (inverse RoPE, fp32 math on the bf16 output, rounded to bf16: kernels_triton.rope's op,
    bit for bit) at the query's position, pos0 + row, or with seg the row's position column of the
    segment table (a packed batch); (0, 0, False): no rotation. See rope_fusable.
    """
    if variant not in KERNEL_VARIANTS:
        raise ValueError(f"variant must be one of {KERNEL_VARIANTS}, got {variant!r}")
    if heads % BLOCK_HEADS or heads <= 0:
        raise ValueError(f"heads must be a positive multiple of {BLOCK_HEADS} (pad), got {heads}")
    if block_keys != 64:
        raise ValueError("block_keys must be 64 (the producer's thread mapping assumes it)")
    if num_indices_padded <= 0 or num_indices_padded % (2 * block_keys):
        raise ValueError(
            f"num_indices_padded must be a positive multiple of {2 * block_keys}, got "
            f"{num_indices_padded}")
    tail = dim_qk - dim_v
    if dim_v % 128 or tail < 0 or tail % 64 or tail > 64:
        raise ValueError(
            f"kernel needs dim_v % 128 == 0 and dim_qk - dim_v in {{0, 64}}, got "
            f"dim_qk={dim_qk}, dim_v={dim_v}")
    family, _, walk = variant.partition("-")
    ring = variant in RING_VARIANTS
    if ring and tail:
        raise ValueError(f"seesaw-ring takes dim_qk == dim_v (no RoPE tail), got dim_qk={dim_qk}")
    if ring and num_indices_padded != RING:
        raise ValueError(f"seesaw-ring holds a window of {RING} rows, got a list of {num_indices_padded}")
    smem = smem_bytes_estimate(dim_qk, dim_v, variant, block_keys)
    if smem > SM90_SMEM_LIMIT:
        raise ValueError(f"shape class needs {smem} B of shared memory > {SM90_SMEM_LIMIT}")
    col0, rot_dim, rope_seg = rope
    if rot_dim and (variant == "pipelined" or not rope_fusable(col0 + rot_dim, rot_dim)):
        raise ValueError(f"the fused inverse RoPE needs a ws variant and channels [{col0}, {col0 + rot_dim}) "
                         f"inside the second value half [{dim_v // 2}, {dim_v}) (rope_fusable)")
    if variant == "pipelined":
        return _build_pipelined(heads, dim_qk, dim_v, num_indices_padded, bool(with_sink), bool(return_lse),
                                block_keys)
    if family == "seesaw":
        if ring:
            return _build_seesaw_ring(heads, dim_qk, bool(with_sink), bool(return_lse), block_keys,
                                      rope=(int(col0), int(rot_dim), bool(rope_seg)), packed=walk == "ring-seg")
        if walk == "bounded" and num_indices_padded < SEESAW_BOUNDED_MIN_NI:
            raise ValueError(f"seesaw-bounded needs a list of >= {SEESAW_BOUNDED_MIN_NI} slots (TileLang 0.1.15 "
                             f"cannot lower it for fewer: ThreadSync in a divergent region); use 'seesaw' (every block)")
        return _build_seesaw(heads, dim_qk, dim_v, num_indices_padded, bool(with_sink), bool(return_lse), block_keys,
                             implicit_window=walk == "window", bounded=walk != "",
                             rope=(int(col0), int(rot_dim), bool(rope_seg)))
    return _build_ws(heads, dim_qk, dim_v, num_indices_padded, bool(with_sink), bool(return_lse), block_keys,
                     implicit_window=walk == "window", bounded=walk != "",
                     rope=(int(col0), int(rot_dim), bool(rope_seg)))


def _signature(T, body, heads, dim_qk, dim_v, NI, with_sink, return_lse):
    """Wrap a T.macro body in the prim_func whose parameter list matches the options
    (absent tensors are simply not parameters, so nothing is allocated for them). RopeCos, RopeSin
    [P, RT] fp32 and Seg [NS, 4] int32 are always parameters: a kernel without the fused inverse
    RoPE (or unpacked) never reads them, and its caller passes a one-row stand-in."""
    B, Sq, R, IB, ISq, P, RT, NS = T.dynamic("B, Sq, R, IB, ISq, P, RT, NS")
    bf16, f32, i32 = T.bfloat16, T.float32, T.int32
    q_shape, kv_shape, i_shape = [B, Sq, heads, dim_qk], [B, R, dim_qk], [IB, ISq, NI]
    o_shape, l_shape = [B, Sq, heads, dim_v], [B, Sq, heads]

    if with_sink and return_lse:
        @T.prim_func
        def sparse_mla_fwd_kernel(Q: T.Tensor(q_shape, bf16), KV: T.Tensor(kv_shape, bf16),
                                  Indices: T.Tensor(i_shape, i32), Sink: T.Tensor([heads], f32),
                                  Out: T.Tensor(o_shape, bf16), Lse: T.Tensor(l_shape, f32),
                                  RopeCos: T.Tensor([P, RT], f32), RopeSin: T.Tensor([P, RT], f32),
                                  Seg: T.Tensor([NS, 4], i32),
                                  sm_scale: T.float32, pos0: T.int32, bound_w: T.int32, bound_k: T.int32,
                                  bound_m: T.int32, span: T.int32):
            body(Q, KV, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
                 bound_m, B, Sq, R, P, span)
    elif with_sink:
        @T.prim_func
        def sparse_mla_fwd_kernel(Q: T.Tensor(q_shape, bf16), KV: T.Tensor(kv_shape, bf16),
                                  Indices: T.Tensor(i_shape, i32), Sink: T.Tensor([heads], f32),
                                  Out: T.Tensor(o_shape, bf16),
                                  RopeCos: T.Tensor([P, RT], f32), RopeSin: T.Tensor([P, RT], f32),
                                  Seg: T.Tensor([NS, 4], i32),
                                  sm_scale: T.float32, pos0: T.int32,
                                  bound_w: T.int32, bound_k: T.int32, bound_m: T.int32, span: T.int32):
            body(Q, KV, Indices, Sink, Out, None, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
                 bound_m, B, Sq, R, P, span)
    elif return_lse:
        @T.prim_func
        def sparse_mla_fwd_kernel(Q: T.Tensor(q_shape, bf16), KV: T.Tensor(kv_shape, bf16),
                                  Indices: T.Tensor(i_shape, i32),
                                  Out: T.Tensor(o_shape, bf16), Lse: T.Tensor(l_shape, f32),
                                  RopeCos: T.Tensor([P, RT], f32), RopeSin: T.Tensor([P, RT], f32),
                                  Seg: T.Tensor([NS, 4], i32),
                                  sm_scale: T.float32, pos0: T.int32, bound_w: T.int32, bound_k: T.int32,
                                  bound_m: T.int32, span: T.int32):
            body(Q, KV, Indices, None, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
                 bound_m, B, Sq, R, P, span)
    else:
        @T.prim_func
        def sparse_mla_fwd_kernel(Q: T.Tensor(q_shape, bf16), KV: T.Tensor(kv_shape, bf16),
                                  Indices: T.Tensor(i_shape, i32),
                                  Out: T.Tensor(o_shape, bf16),
                                  RopeCos: T.Tensor([P, RT], f32), RopeSin: T.Tensor([P, RT], f32),
                                  Seg: T.Tensor([NS, 4], i32),
                                  sm_scale: T.float32, pos0: T.int32,
                                  bound_w: T.int32, bound_k: T.int32, bound_m: T.int32, span: T.int32):
            body(Q, KV, Indices, None, Out, None, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
                 bound_m, B, Sq, R, P, span)
    return sparse_mla_fwd_kernel


def _softmax_macro(T, HB, BI):
    """One key block's online-softmax step, shared by both variants: the new running max m_i (log2
    units), the rescale factor alpha of everything accumulated so far, acc_s <- exp2(logits - m_i)
    (the block's P) and the running sum l_i. The caller rescales its own output accumulator by alpha."""

    @T.macro
    def online_softmax(acc_s, m_i, m_prev, alpha, l_i, l_blk, scale2):
        T.copy(m_i, m_prev)
        T.reduce_max(acc_s, m_i, dim=1, clear=True)
        for h in T.Parallel(HB):
            m_i[h] = T.max(m_prev[h], m_i[h] * scale2)
            alpha[h] = T.exp2(m_prev[h] - m_i[h])
        for h, j in T.Parallel(HB, BI):
            acc_s[h, j] = T.exp2(acc_s[h, j] * scale2 - m_i[h])
        T.reduce_sum(acc_s, l_blk, dim=1)
        for h in T.Parallel(HB):
            l_i[h] = l_i[h] * alpha[h] + l_blk[h]

    return online_softmax


def _epilogue_macros(T, HB, with_sink, return_lse):
    """Final per-row normalisation shared by both variants.

    m is the running max of the log2-scaled logits, l the running sum of exp2(x - m). The sink
    joins here as exp2(sink2 - mt) with mt = max(m, sink2), so neither term can overflow
    whatever the sink's size. Only an exactly zero denominator writes zeros (no valid key and
    no sink, or a -inf sink); a NaN one (a NaN logit or value, a NaN or +inf sink) is not
    tested away, so non-finite inputs propagate as in the dense formula (semantics section 9).
    With a finite sink and no valid key, r = exp2(M_INIT - mt) = 0 gives zeros and LSE = sink."""

    @T.macro
    def finalize(m_i, l_i, inv, lse_frag, Sink, h0):
        for h in T.Parallel(HB):
            if with_sink:
                sink2 = Sink[h0 + h] * LOG2E
                mt = T.max(m_i[h], sink2)
                r = T.exp2(m_i[h] - mt)
                den = l_i[h] * r + T.exp2(sink2 - mt)
                inv[h] = T.if_then_else(den == 0, 0.0, r / den)
                if return_lse:
                    lse_frag[h] = (T.log2(den) + mt) * LN2
            else:
                inv[h] = T.if_then_else(l_i[h] == 0, 0.0, 1.0 / l_i[h])
                if return_lse:
                    lse_frag[h] = T.if_then_else(l_i[h] == 0, -T.infinity(T.float32),
                                                 (T.log2(l_i[h]) + m_i[h]) * LN2)

    return finalize


def _inverse_rope_macro(T, HB, rope):
    """The fused inverse RoPE of the output tile (rope = (col0, rot_dim, seg), see build_sparse_mla_fwd).

    It reads the bf16 tile in shared memory, after the normalised output was rounded into it, so it
    computes exactly what kernels_triton.rope.kernel does to the stored output: pair (a, b) of channels
    (col0 + 2k, col0 + 2k + 1) becomes (a*c + b*s, b*c - a*s) with c, s the fp32 table row of the
    query's position, each product and sum rounded on its own (__fmul_rn / __fadd_rn: fast math and
    nvcc's FMA contraction cannot fuse them), then rounded to bf16, into columns 2k, 2k + 1 of R_s.
    A position past the tables' last row reads the last row (the wrapper checks the tables cover the
    rows it is given)."""
    col0, rot_dim, seg = rope
    f32, bf16 = T.float32, T.bfloat16

    def mul(x, y):
        return T.call_extern(f32, "__fmul_rn", x, y)

    def position(Seg, s_i, s_pos):
        return Seg[s_i, 0] if seg else s_pos        # column 0 of a segment row: the position in its sequence

    @T.macro
    def inverse_rope(O_s, R_s, RopeCos, RopeSin, Seg, s_i, s_pos, P, tile=None, src_tile=None):
        # R_s: a [HB, >= rot_dim] tile, or with `tile` the tile R_s[tile] of a stack of them. With `src_tile`, O_s
        # and R_s are stacks of 64-column chunks: the pairs are read from the chunk O_s[src_tile] that holds
        # them and written to the same columns of R_s[tile]
        tab = T.min(position(Seg, s_i, s_pos), P - 1)
        for h, k in T.Parallel(HB, rot_dim // 2):
            if src_tile is not None:
                a = T.cast(O_s[src_tile, h, col0 % ROPE_TILE + 2 * k], f32)
                b = T.cast(O_s[src_tile, h, col0 % ROPE_TILE + 2 * k + 1], f32)
            else:
                a = T.cast(O_s[h, col0 + 2 * k], f32)
                b = T.cast(O_s[h, col0 + 2 * k + 1], f32)
            c = RopeCos[tab, k]
            sn = RopeSin[tab, k]
            if tile is None:
                R_s[h, 2 * k] = T.cast(T.call_extern(f32, "__fadd_rn", mul(a, c), mul(b, sn)), bf16)
                R_s[h, 2 * k + 1] = T.cast(T.call_extern(f32, "__fsub_rn", mul(b, c), mul(a, sn)), bf16)
            elif src_tile is not None:
                R_s[tile, h, col0 % ROPE_TILE + 2 * k] = T.cast(
                    T.call_extern(f32, "__fadd_rn", mul(a, c), mul(b, sn)), bf16)
                R_s[tile, h, col0 % ROPE_TILE + 2 * k + 1] = T.cast(
                    T.call_extern(f32, "__fsub_rn", mul(b, c), mul(a, sn)), bf16)
            else:
                R_s[tile, h, 2 * k] = T.cast(T.call_extern(f32, "__fadd_rn", mul(a, c), mul(b, sn)), bf16)
                R_s[tile, h, 2 * k + 1] = T.cast(T.call_extern(f32, "__fsub_rn", mul(b, c), mul(a, sn)), bf16)

    return inverse_rope


def _key_fns(T, implicit_window):
    """key_row(Indices, b, s, s_pos, bound_w, slot) -> the kv row of a key-list slot (read from the list, or
    computed for the implicit window); key_ok(s_pos, bound_w, slot, ix, R) -> whether the slot is valid."""

    def key_row(Indices, b_i, s_i, s_pos, bound_w, slot):
        if implicit_window:
            return T.max(s_pos - bound_w + 1, 0) + slot
        return Indices[b_i, s_i, slot]

    def key_ok(s_pos, bound_w, slot, ix, R):
        if implicit_window:
            return (slot < bound_w) & (ix <= s_pos) & (ix < R)
        return (ix >= 0) & (ix < R)

    return key_row, key_ok


def _q_load_macro(T, HB, DV, DT):
    """cp.async of one query's Q tile (HB heads from h0) into Q_s, and its RoPE tail into Qt_s when DT > 0, by
    the 128 producer threads: 8 threads per row, 16 B each, so every row is read as full 128 B segments.
    p = thread index in the group. Every warp-specialised kernel's producer loads Q so."""

    @T.macro
    def load_q(Q, Q_s, Qt_s, p, b_i, s_i, h0):
        for r in T.serial(HB // 16):
            row = r * 16 + p // 8
            for u in T.unroll(DV // 64):
                T.ptx_cp_async(
                    T.access_ptr(Q_s[row, u * 64 + (p % 8) * 8], "w", 8),
                    T.access_ptr(Q[b_i, s_i, h0 + row, u * 64 + (p % 8) * 8], "r", 8),
                    8)
            if DT > 0:
                for u in T.unroll(DT // 64):
                    T.ptx_cp_async(
                        T.access_ptr(Qt_s[row, u * 64 + (p % 8) * 8], "w", 8),
                        T.access_ptr(Q[b_i, s_i, h0 + row, DV + u * 64 + (p % 8) * 8],
                                     "r", 8),
                        8)

    return load_q


def _producer_macro(T, HB, BI, DV, DT, key_row, key_ok):
    """The producer warpgroup of the ws and seesaw kernels: cp.async of the query's Q tile (_q_load_macro),
    then per pair of key blocks the gather of each block's KV rows into its stage of the 2-stage ring (K_s,
    tail into Kt_s), each stage refilled once both consumers freed it. 8 threads per row, 16 B each: every
    row is read as full 128 B segments. p = thread index in the group."""
    load_q = _q_load_macro(T, HB, DV, DT)

    @T.macro
    def produce(Q, KV, Indices, Q_s, Qt_s, K_s, Kt_s, bar_q, bar_kv_full, bar_kv_free, p, b_i, s_i, h0, s_pos,
                bound_w, n_it, R):
        load_q(Q, Q_s, Qt_s, p, b_i, s_i, h0)
        T.cp_async_barrier_noinc(bar_q)
        for it in T.serial(n_it):
            for st in T.unroll(2):
                k = it * 2 + st
                T.barrier_wait(bar_kv_free[st], (it & 1) ^ 1)
                for r in T.serial(BI // 16):
                    row = r * 16 + p // 8
                    ix = key_row(Indices, b_i, s_i, s_pos, bound_w, k * BI + row)
                    ok = key_ok(s_pos, bound_w, k * BI + row, ix, R)
                    # invalid slot: src-size 0 zero-fills 16 B and reads nothing;
                    # the clamp only keeps the (unused) address inside kv
                    ixc = T.if_then_else(ok, ix, 0)
                    for u in T.unroll(DV // 64):
                        T.ptx_cp_async(
                            T.access_ptr(K_s[st, row, u * 64 + (p % 8) * 8], "w", 8),
                            T.access_ptr(KV[b_i, ixc, u * 64 + (p % 8) * 8], "r", 8),
                            8, ok)
                    if DT > 0:
                        for u in T.unroll(DT // 64):
                            T.ptx_cp_async(
                                T.access_ptr(Kt_s[st, row, u * 64 + (p % 8) * 8], "w", 8),
                                T.access_ptr(KV[b_i, ixc, DV + u * 64 + (p % 8) * 8],
                                             "r", 8),
                                8, ok)
                T.cp_async_barrier_noinc(bar_kv_full[st])
        # tail: stay alive until the consumers released both stages, i.e. until
        # every cp.async this thread issued has landed and been consumed
        for st in T.unroll(2):
            T.barrier_wait(bar_kv_free[st], (n_it & 1) ^ 1)

    return produce


def _build_ws(heads, D, DV, NI, with_sink, return_lse, BI, implicit_window=False, bounded=False, rope=NO_ROPE):
    import tilelang.language as T

    HB = BLOCK_HEADS
    G = heads // HB               # head groups = CTAs per query
    DT = D - DV                   # rope tail: only in Q K^T
    DH = DV // 2                  # value half owned by each consumer warpgroup
    NB = NI // BI                 # key blocks (even)
    bf16, f32 = T.bfloat16, T.float32
    M_INIT = -1.0e30              # finite: exp2(M_INIT - M_INIT) = 1, never inf - inf
    finalize = _epilogue_macros(T, HB, with_sink, return_lse)
    online_softmax = _softmax_macro(T, HB, BI)
    inverse_rope = _inverse_rope_macro(T, HB, rope)
    RC, RD = rope[0], rope[1]     # the rotated channels [RC, RC + RD) (RD = 0: none)
    key_row, key_ok = _key_fns(T, implicit_window)
    produce = _producer_macro(T, HB, BI, DV, DT, key_row, key_ok)

    @T.macro
    def body(Q, KV, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
             bound_m, B, Sq, R, P, span):
        with T.Kernel(Sq * G, B, threads=384) as (bx, by):
            Q_s = T.alloc_shared([HB, DV], bf16)          # reused as the output tile
            K_s = T.alloc_shared([2, BI, DV], bf16)        # KV ring, value part (= K[:DV])
            if DT > 0:
                Qt_s = T.alloc_shared([HB, DT], bf16)
                Kt_s = T.alloc_shared([2, BI, DT], bf16)
            P_s = T.alloc_shared([HB, BI], bf16)
            alpha_s = T.alloc_shared([HB], f32)
            inv_s = T.alloc_shared([HB], f32)

            acc_s = T.alloc_fragment([HB, BI], f32)
            acc_ol = T.alloc_fragment([HB, DH], f32)
            acc_or = T.alloc_fragment([HB, DH], f32)
            m_i = T.alloc_fragment([HB], f32)
            m_prev = T.alloc_fragment([HB], f32)
            alpha = T.alloc_fragment([HB], f32)
            l_i = T.alloc_fragment([HB], f32)
            l_blk = T.alloc_fragment([HB], f32)
            inv = T.alloc_fragment([HB], f32)
            lse_frag = T.alloc_fragment([HB], f32)

            # Barrier protocol (phase n of a barrier completes once per use):
            #   bar_q        producer cp.async(Q) done            -> WG0 may read Q_s
            #   bar_kv_full  producer cp.async(stage) done        -> WG0/WG1 may read K_s[st]
            #   bar_kv_free  WG0 and WG1 finished with K_s[st]    -> producer may refill it
            #   bar_p_full   WG0 wrote P_s / alpha_s (+ fence)    -> WG1 may read them
            #   bar_p_free   WG1's P V for this step completed    -> WG0 may overwrite P_s
            #   bar_fin      WG0 wrote inv_s                      -> WG1 may normalise
            bar_q = T.alloc_barrier(128)
            bar_kv_full = T.alloc_barrier([128, 128])
            bar_kv_free = T.alloc_barrier([256, 256])
            bar_p_full = T.alloc_barrier(128)
            bar_p_free = T.alloc_barrier(128)
            bar_fin = T.alloc_barrier(128)

            s_i = bx // G
            h0 = (bx % G) * HB
            b_i = by
            tx = T.get_thread_binding()
            scale2 = sm_scale * LOG2E     # logits in log2 units: exp2 is one MUFU op
            # causal block skipping: only the pairs of key blocks under the query's bound (a runtime
            # trip count; "ws" keeps the compile-time one, which nvcc unrolls: ~10 % faster on full lists)
            s_pos = pos0 + s_i
            n_valid = bound_w + T.min(bound_k, (s_pos + 1) // bound_m)
            n_it = T.min((n_valid + 2 * BI - 1) // (2 * BI), NB // 2) if bounded else NB // 2

            if tx < 128:
                # ---------------- WG0: S = Q K^T, softmax, left half of P V ----------------
                T.set_max_nreg(240, 1)
                T.fill(m_i, M_INIT)
                T.fill(l_i, 0)
                T.fill(acc_ol, 0)
                T.barrier_wait(bar_q, 0)
                for it in T.serial(n_it):
                    for st in T.unroll(2):
                        k = it * 2 + st
                        # additive mask, read straight from global (read-only, no sync
                        # needed); issued before the wait so the loads hide behind it
                        for h, j in T.Parallel(HB, BI):
                            acc_s[h, j] = T.if_then_else(
                                key_ok(s_pos, bound_w, k * BI + j,
                                       key_row(Indices, b_i, s_i, s_pos, bound_w, k * BI + j), R),
                                0, -T.infinity(f32))
                        T.barrier_wait(bar_kv_full[st], it & 1)
                        # cp.async writes are generic-proxy; wgmma reads through the async
                        # proxy. wgmma_gemm does not fence by itself.
                        T.fence_proxy_async()
                        T.wgmma_gemm(Q_s, K_s[st, :, :], acc_s, transpose_B=True)
                        if DT > 0:
                            T.wgmma_gemm(Qt_s, Kt_s[st, :, :], acc_s, transpose_B=True)
                        T.wait_wgmma(0)
                        # wgmma_gemm fences its accumulator only before the wait: keep nvcc
                        # from hoisting reads of acc_s above wgmma.wait_group
                        T.warpgroup_fence_operand(acc_s, num_regs=HB * BI // 128)  # per thread
                        online_softmax(acc_s, m_i, m_prev, alpha, l_i, l_blk, scale2)
                        for h, d in T.Parallel(HB, DH):
                            acc_ol[h, d] *= alpha[h]
                        # P_s / alpha_s are single-buffered: WG1 must be done with step k-1
                        if k > 0:
                            T.barrier_wait(bar_p_free, (k - 1) & 1)
                        T.copy(alpha, alpha_s)
                        T.copy(acc_s, P_s)
                        # writer-side proxy fence: P_s is read by WG1's wgmma
                        T.fence_proxy_async()
                        T.barrier_arrive(bar_p_full)
                        T.gemm(P_s, K_s[st, :, 0:DH], acc_ol)
                        T.barrier_arrive(bar_kv_free[st])
                finalize(m_i, l_i, inv, lse_frag, Sink, h0)
                T.copy(inv, inv_s)
                T.barrier_arrive(bar_fin)
                if return_lse:
                    for h in T.Parallel(HB):
                        Lse[b_i, s_i, h0 + h] = lse_frag[h]
                for h, d in T.Parallel(HB, DH):
                    acc_ol[h, d] *= inv[h]
                # Q_s is dead: WG0's last Q K^T completed above
                T.copy(acc_ol, Q_s[:, 0:DH])
                T.fence_proxy_async()  # every writer, before the TMA store reads the tile
                T.copy(Q_s[:, 0:DH], Out[b_i, s_i, h0:h0 + HB, 0:DH])
            elif tx < 256:
                # ---------------- WG1: right half of P V ----------------
                T.set_max_nreg(168, 1)
                T.fill(acc_or, 0)
                for it in T.serial(n_it):
                    for st in T.unroll(2):
                        k = it * 2 + st
                        T.barrier_wait(bar_p_full, k & 1)
                        # already complete (WG0 waited on it before publishing P); this is
                        # a direct acquire of the cp.async data for this warpgroup
                        T.barrier_wait(bar_kv_full[st], it & 1)
                        T.fence_proxy_async()
                        for h, d in T.Parallel(HB, DH):
                            acc_or[h, d] *= alpha_s[h]
                        T.gemm(P_s, K_s[st, :, DH:DV], acc_or)
                        T.barrier_arrive(bar_p_free)
                        T.barrier_arrive(bar_kv_free[st])
                T.barrier_wait(bar_fin, 0)
                for h, d in T.Parallel(HB, DH):
                    acc_or[h, d] *= inv_s[h]
                # bar_fin also proves WG0's last Q K^T is done, so Q_s can take the output
                T.copy(acc_or, Q_s[:, DH:DV])
                if RC > 0:
                    # the fused inverse RoPE: its channels lie in this warpgroup's half (rope_fusable).
                    # The rotated pairs go to P_s, dead here (this warpgroup's own last P V read it,
                    # and WG0 wrote it for the last time before bar_fin): reading one tile and writing
                    # another needs no barrier between the pairs of one thread.
                    inverse_rope(Q_s, P_s, RopeCos, RopeSin, Seg, s_i, s_pos, P)
                    T.fence_proxy_async()
                    T.copy(Q_s[:, DH:RC], Out[b_i, s_i, h0:h0 + HB, DH:RC])
                    T.copy(P_s[:, 0:RD], Out[b_i, s_i, h0:h0 + HB, RC:RC + RD])
                else:
                    T.fence_proxy_async()
                    T.copy(Q_s[:, DH:DV], Out[b_i, s_i, h0:h0 + HB, DH:DV])
            else:
                # ---------------- WG2: producer ----------------
                T.set_max_nreg(80, 0)
                produce(Q, KV, Indices, Q_s, Qt_s if DT > 0 else None, K_s, Kt_s if DT > 0 else None, bar_q,
                        bar_kv_full, bar_kv_free, tx - 256, b_i, s_i, h0, s_pos, bound_w, n_it, R)

    return _signature(T, body, heads, D, DV, NI, with_sink, return_lse)


def _chain_macros(T, HB, BI, DH, M_INIT):
    """The seesaw's chained running max over a pair of key blocks (see _build_seesaw), one definition for the
    listed kernel and the window ring kernel (_build_seesaw_ring), which must give the listed kernel's bits:
      chain_max(c, ...)   WG0: m0 = max(m, block 0's max), published in mx_s[0, slot]; WG1: m1 = max(m0,
                          block 1's max), published in mx_s[1, slot]. m is m_prev, or M_INIT with m_prev None
                          (the ring kernel's max starts afresh each query).
      p0_to_m1(...)       WG0's P0 V0 from registers at m0 (issued asynchronously, left in flight), then, once
                          WG1 published m1, its max, row sum and P0 (acc_s) moved to m1; alpha = exp2(m0 - m1)
                          is left for rescaling acc_o once that P V is done.
    slot: the mx_s parity slot of this pair; phase: the parity of bar_mx's phase that publishes it."""

    def start(m_prev, h):
        return M_INIT if m_prev is None else m_prev[h]

    @T.macro
    def chain_max(c, m_i, m_prev, m_blk, mx_s, bar_mx, slot, phase, scale2):
        if c == 0:
            # m0 published at once: WG1's softmax waits on it alone
            for h in T.Parallel(HB):
                m_i[h] = T.max(start(m_prev, h), m_blk[h] * scale2)
                mx_s[0, slot, h] = m_i[h]
            T.barrier_arrive(bar_mx[0])
        else:
            T.barrier_wait(bar_mx[0], phase)
            for h in T.Parallel(HB):
                m_i[h] = T.max(mx_s[0, slot, h], m_blk[h] * scale2)     # m1 = max(m0, block 1's max)
                mx_s[1, slot, h] = m_i[h]
            T.barrier_arrive(bar_mx[1])

    @T.macro
    def p0_to_m1(acc_s, P_r, K_s, acc_o, m_i, m_peer, alpha, l_i, mx_s, bar_mx, slot, phase, clear):
        T.copy(acc_s, P_r)
        T.wgmma_gemm(P_r, K_s[0, :, 0:DH], acc_o, clear_accum=clear)
        T.barrier_wait(bar_mx[1], phase)
        for h in T.Parallel(HB):
            m_peer[h] = mx_s[1, slot, h]                    # m1
            alpha[h] = T.exp2(m_i[h] - m_peer[h])           # now the factor from m0 to m1
            m_i[h] = m_peer[h]
            l_i[h] = l_i[h] * alpha[h]
        for h, j in T.Parallel(HB, BI):
            acc_s[h, j] = acc_s[h, j] * alpha[h]

    return chain_max, p0_to_m1


def _build_seesaw(heads, D, DV, NI, with_sink, return_lse, BI, implicit_window=False, bounded=False, rope=NO_ROPE):
    """The "seesaw" split of the ws kernel. Both consumer warpgroups compute
    Q K^T, on alternate key blocks (WG0 the even block of a pair, WG1 the odd one), and each accumulates
    P V over both blocks for its own half of the value dims. Per pair of blocks each does one Q K^T and two
    half-width P V: the same work (the "ws" split gives WG0 both Q K^T and WG1 only P V). Same semantics,
    same producer, same epilogue.

    The running max is chained, as in FlashMLA's seesaw schedule, so that the two softmaxes do not run at
    the same time (tensor cores idle): per pair, with m the running max of the pairs before,
      WG0: m0 = max(m, block 0's max), published; P0 = exp2(S0 - m0); O_L += P0 V0_L from registers,
           issued asynchronously; then, given m1, P0 * exp2(m0 - m1) -> P_s[0] for WG1; O_L, l rescaled
           to m1 once the P V is done (stage 0 freed); O_L += P1 V1_L.
      WG1: m1 = max(m0, block 1's max), published; P1 = exp2(S1 - m1) -> P_s[1]; O_R += P0 V0_R (stage 0
           freed), O_R += P1 V1_R.
    WG1's softmax runs under WG0's first P V, WG0's rescale under WG1's; both consumers multiply block 0
    first, so its stage is refilled half a pair early and the next pair's gather starts under the P V of
    block 1. Both end the pair at m1, the next pair's m. (It replaced a symmetric exchange of the two blocks'
    maxima, with both softmaxes at once: 12.1-12.4 against 11.1 ms for 65,536 queries of v4-flash's shape on
    an H200, docs/performance.md "The seesaw's chained maxima".)

    With a RoPE tail (D = DV + 64, V3.2's 576-dim rows) the tail's ring Kt_s holds the P tiles: stage c's tail
    (64 rows x 64 dims, read by consumer c's Q K^T alone) is dead once that Q K^T is done, and it is a P
    tile's shape, so consumer c writes its P there for the peer, who reads it before it frees the stage. Q,
    its tail and the two stages fill 216 KB, where two more P tiles would not fit.

    Barriers (phase n of a barrier completes once per use of it; c is a consumer, c' the other):
      bar_q           producer cp.async(Q) done              -> both may read Q_s
      bar_kv_full[st] producer cp.async(stage st) done       -> both may read K_s[st]
      bar_kv_free[st] both consumers finished with K_s[st]   -> producer may refill it
      bar_mx[c]       c wrote its running max to mx_s[c, it % 2] (after the loop: its row sum to sum_s[c])
      bar_p[c]        c wrote P_s[c] (+ fence)               -> c' may multiply it
    WG0 writes P_s[0] after waiting bar_mx[1] of the pair, and WG1 writes mx_s[1, it % 2] and P_s[1] after
    waiting bar_mx[0] of the pair; WG0 writes mx_s[0, it % 2] two pairs later than WG1 read it, after
    waiting bar_mx[1] of the pair between. Each of those arrivals comes after the arriving consumer's reads
    of the earlier contents (program order, release/acquire), and neither consumer can run a phase of a
    barrier ahead of the other's wait on it."""
    import tilelang.language as T

    HB = BLOCK_HEADS
    G = heads // HB
    DT = D - DV                   # RoPE tail: only in Q K^T
    DH = DV // 2                  # value half owned by each consumer warpgroup
    NB = NI // BI                 # key blocks (even)
    bf16, f32 = T.bfloat16, T.float32
    M_INIT = -1.0e30              # finite: exp2(M_INIT - M_INIT) = 1, never inf - inf
    finalize = _epilogue_macros(T, HB, with_sink, return_lse)
    inverse_rope = _inverse_rope_macro(T, HB, rope)
    chain_max, p0_to_m1 = _chain_macros(T, HB, BI, DH, M_INIT)
    RC, RD = rope[0], rope[1]
    key_row, key_ok = _key_fns(T, implicit_window)
    produce = _producer_macro(T, HB, BI, DV, DT, key_row, key_ok)

    @T.macro
    def consumer(c, Q_s, Qt_s, K_s, Kt_s, P_s, mx_s, sum_s, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, acc_s,
                 acc_o, m_i, m_prev, m_blk, m_peer, alpha, l_i, l_blk, inv, lse_frag, bar_q, bar_kv_full, bar_kv_free,
                 bar_mx, bar_p, scale2, s_pos, n_it, b_i, s_i, h0, bound_w, R, P, P_r):
        # m_peer and P_r are WG0's alone: WG1 reads m0 from mx_s as it takes the max, and passes None for both
        T.fill(m_i, M_INIT)
        T.fill(l_i, 0)
        T.fill(acc_o, 0)
        T.barrier_wait(bar_q, 0)
        for it in T.serial(n_it):
            k = it * 2 + c
            # additive mask of this consumer's block, read before the wait so the loads hide behind it
            for h, j in T.Parallel(HB, BI):
                acc_s[h, j] = T.if_then_else(
                    key_ok(s_pos, bound_w, k * BI + j, key_row(Indices, b_i, s_i, s_pos, bound_w, k * BI + j), R),
                    0, -T.infinity(f32))
            T.barrier_wait(bar_kv_full[c], it & 1)
            T.fence_proxy_async()          # cp.async (generic proxy) -> wgmma (async proxy)
            T.wgmma_gemm(Q_s, K_s[c, :, :], acc_s, transpose_B=True)
            if DT > 0:
                T.wgmma_gemm(Qt_s, Kt_s[c, :, :], acc_s, transpose_B=True)
            T.wait_wgmma(0)
            T.warpgroup_fence_operand(acc_s, num_regs=HB * BI // 128)
            T.reduce_max(acc_s, m_blk, dim=1, clear=True)
            T.copy(m_i, m_prev)
            chain_max(c, m_i, m_prev, m_blk, mx_s, bar_mx, it & 1, it & 1, scale2)
            for h in T.Parallel(HB):
                alpha[h] = T.exp2(m_prev[h] - m_i[h])
            for h, j in T.Parallel(HB, BI):
                acc_s[h, j] = T.exp2(acc_s[h, j] * scale2 - m_i[h])
            T.reduce_sum(acc_s, l_blk, dim=1)
            for h in T.Parallel(HB):
                l_i[h] = l_i[h] * alpha[h] + l_blk[h]       # this consumer's blocks only; summed at the end
            for h, d in T.Parallel(HB, DH):
                acc_o[h, d] *= alpha[h]
            if c == 0:
                # P0 V0 from registers at m0, under WG1's softmax; then P0 moved to m1 for WG1
                p0_to_m1(acc_s, P_r, K_s, acc_o, m_i, m_peer, alpha, l_i, mx_s, bar_mx, it & 1, it & 1, False)
                T.copy(acc_s, P_s[0, :, :])
                T.fence_proxy_async()
                T.barrier_arrive(bar_p[0])
                T.wait_wgmma(0)
                T.warpgroup_fence_operand(acc_o, num_regs=HB * DH // 128)
                T.barrier_arrive(bar_kv_free[0])
                for h, d in T.Parallel(HB, DH):
                    acc_o[h, d] *= alpha[h]
                T.barrier_wait(bar_p[1], it & 1)
                T.gemm(P_s[1, :, :], K_s[1, :, 0:DH], acc_o)
                T.barrier_arrive(bar_kv_free[1])
            else:
                # P1 for WG0, then block 0 first: its stage is the one the producer refills first
                T.copy(acc_s, P_s[1, :, :])
                T.fence_proxy_async()          # P_s is read by wgmma (the peer's too)
                T.barrier_arrive(bar_p[1])
                T.barrier_wait(bar_p[0], it & 1)
                T.gemm(P_s[0, :, :], K_s[0, :, DH:DV], acc_o)
                T.barrier_arrive(bar_kv_free[0])
                T.gemm(P_s[1, :, :], K_s[1, :, DH:DV], acc_o)
                T.barrier_arrive(bar_kv_free[1])
        # the denominator sums both consumers' blocks (sum_s: written once, no parity slot to pick)
        for h in T.Parallel(HB):
            sum_s[c, h] = l_i[h]
        T.barrier_arrive(bar_mx[c])
        T.barrier_wait(bar_mx[1 - c], n_it & 1)
        for h in T.Parallel(HB):
            l_i[h] = l_i[h] + sum_s[1 - c, h]
        finalize(m_i, l_i, inv, lse_frag, Sink, h0)
        if return_lse and c == 0:
            for h in T.Parallel(HB):
                Lse[b_i, s_i, h0 + h] = lse_frag[h]
        for h, d in T.Parallel(HB, DH):
            acc_o[h, d] *= inv[h]
        # Q_s is dead: the peer's last Q K^T completed before its last bar_mx arrival
        T.copy(acc_o, Q_s[:, c * DH:(c + 1) * DH])
        if c == 1 and RC > 0:
            # the fused inverse RoPE (rope_fusable: its channels are in this half) into P_s[1], dead: the
            # peer's last P V read it before its final bar_mx arrival
            inverse_rope(Q_s, P_s, RopeCos, RopeSin, Seg, s_i, s_pos, P, tile=1)
            T.fence_proxy_async()
            T.copy(Q_s[:, DH:RC], Out[b_i, s_i, h0:h0 + HB, DH:RC])
            T.copy(P_s[1, :, 0:RD], Out[b_i, s_i, h0:h0 + HB, RC:RC + RD])
        else:
            T.fence_proxy_async()
            T.copy(Q_s[:, c * DH:(c + 1) * DH], Out[b_i, s_i, h0:h0 + HB, c * DH:(c + 1) * DH])

    @T.macro
    def body(Q, KV, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
             bound_m, B, Sq, R, P, span):
        with T.Kernel(Sq * G, B, threads=384) as (bx, by):
            Q_s = T.alloc_shared([HB, DV], bf16)          # reused as the output tile
            K_s = T.alloc_shared([2, BI, DV], bf16)        # KV ring: stage st holds block 2 * it + st
            if DT > 0:
                Qt_s = T.alloc_shared([HB, DT], bf16)
                Kt_s = T.alloc_shared([2, BI, DT], bf16)   # the tails, then each consumer's P of its block
                P_s = Kt_s
            else:
                Qt_s = Kt_s = None
                P_s = T.alloc_shared([2, HB, BI], bf16)    # each consumer's P of its block
            mx_s = T.alloc_shared([2, 2, HB], f32)         # [consumer, parity, row]: the blocks' row maxima
            sum_s = T.alloc_shared([2, HB], f32)           # [consumer, row]: the final row sums

            acc_s0 = T.alloc_fragment([HB, BI], f32)
            acc_s1 = T.alloc_fragment([HB, BI], f32)
            acc_ol = T.alloc_fragment([HB, DH], f32)
            acc_or = T.alloc_fragment([HB, DH], f32)
            m_i0 = T.alloc_fragment([HB], f32)
            m_i1 = T.alloc_fragment([HB], f32)
            m_prev0 = T.alloc_fragment([HB], f32)
            m_prev1 = T.alloc_fragment([HB], f32)
            m_blk0 = T.alloc_fragment([HB], f32)
            m_blk1 = T.alloc_fragment([HB], f32)
            m_peer0 = T.alloc_fragment([HB], f32)
            alpha0 = T.alloc_fragment([HB], f32)
            alpha1 = T.alloc_fragment([HB], f32)
            l_i0 = T.alloc_fragment([HB], f32)
            l_i1 = T.alloc_fragment([HB], f32)
            l_blk0 = T.alloc_fragment([HB], f32)
            l_blk1 = T.alloc_fragment([HB], f32)
            inv0 = T.alloc_fragment([HB], f32)
            inv1 = T.alloc_fragment([HB], f32)
            lse0 = T.alloc_fragment([HB], f32)
            lse1 = T.alloc_fragment([HB], f32)
            P_r = T.alloc_fragment([HB, BI], bf16)

            bar_q = T.alloc_barrier(128)
            bar_kv_full = T.alloc_barrier([128, 128])
            bar_kv_free = T.alloc_barrier([256, 256])
            bar_mx = T.alloc_barrier([128, 128])
            bar_p = T.alloc_barrier([128, 128])

            s_i = bx // G
            h0 = (bx % G) * HB
            b_i = by
            tx = T.get_thread_binding()
            scale2 = sm_scale * LOG2E
            s_pos = pos0 + s_i
            n_valid = bound_w + T.min(bound_k, (s_pos + 1) // bound_m)
            n_it = T.min((n_valid + 2 * BI - 1) // (2 * BI), NB // 2) if bounded else NB // 2

            if tx < 128:
                T.set_max_nreg(216, 1)
                consumer(0, Q_s, Qt_s, K_s, Kt_s, P_s, mx_s, sum_s, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg,
                         acc_s0, acc_ol, m_i0, m_prev0, m_blk0, m_peer0, alpha0, l_i0, l_blk0, inv0, lse0, bar_q,
                         bar_kv_full, bar_kv_free, bar_mx, bar_p, scale2, s_pos, n_it, b_i, s_i, h0, bound_w, R, P, P_r)
            elif tx < 256:
                T.set_max_nreg(216, 1)
                consumer(1, Q_s, Qt_s, K_s, Kt_s, P_s, mx_s, sum_s, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg,
                         acc_s1, acc_or, m_i1, m_prev1, m_blk1, None, alpha1, l_i1, l_blk1, inv1, lse1, bar_q,
                         bar_kv_full, bar_kv_free, bar_mx, bar_p, scale2, s_pos, n_it, b_i, s_i, h0, bound_w, R, P,
                         None)
            else:
                # producer: the ws kernel's
                T.set_max_nreg(72, 0)
                produce(Q, KV, Indices, Q_s, Qt_s, K_s, Kt_s, bar_q, bar_kv_full, bar_kv_free, tx - 256, b_i, s_i,
                        h0, s_pos, bound_w, n_it, R)

    return _signature(T, body, heads, D, DV, NI, with_sink, return_lse)


RING = 128                     # the ring kernel's slots: the window it holds (two 64-key blocks)


def _build_seesaw_ring(heads, D, with_sink, return_lse, BI, rope=NO_ROPE, packed=False):
    """"seesaw-ring": the window-only layer (W = RING) on the seesaw split, as a persistent kernel. A CTA runs
    `span` consecutive queries (of one batch element and head group), so each query's window differs from the
    one before by one row: the KV tile is a ring of RING slots, row r of a sequence in slot r % RING (block
    (r % RING) // BI), and per query the producer writes the row the query adds over the row it drops.
    Attention does not depend on the order of its keys, only its rounding does: this kernel gives the bits of
    the listed seesaw kernel over the same rows in the same slots (kernel.ring_window_ids), within rounding of
    the window in order (checked on the GPU: tests/test_layer_kinds_gpu.py,
    test_implicit_window_equals_the_listed_window). For those bits its softmax is the listed kernel's chain.

    Slot j of the query at position p holds row p - ((p - j) mod RING): a key while that is >= 0 (every slot
    once p >= RING - 1). The CTA's first query, and with `packed` (a packed batch: Seg gives each token's
    position and its sequence's first token) the first token of each sequence, refill the whole ring, the slots
    of rows < 0 zero-filled: a masked slot never holds a non-finite value (0 * NaN would reach P V), nor a row
    of another sequence.

    Per query i the persistent loop overlaps: Q of query i + 1 (loaded once both consumers' Q K^T of i are
    done) and the row it adds (in the producer's registers a query ahead, written once both P V of i are done)
    with the softmax, P V and output of query i. The output leaves in four 64-channel chunks per consumer
    through two staging tiles (P_s[c], free once the peer's P V read it, and X_s[c]) as asynchronous TMA
    stores, each tile rewritten once the store two chunks back has read it: the stores of query i overlap
    query i + 1. (Stored straight from registers, 4-byte stores of half-written sectors, the same kernel took
    16.5 ms at S = 262,144 instead of 12.9: docs/performance.md.)

    Barriers (each completes once per query, phase parity i & 1, except bar_mx: twice):
      bar_q        producer cp.async(Q of query i) done       -> both consumers may read Q_s
      bar_q_free   both consumers' Q K^T of query i done       -> producer may load Q of query i + 1
      bar_kv_full  the ring holds query i's window (+ fence)   -> both may read K_s
      bar_kv_free  both consumers' P V of query i done         -> producer may write query i + 1's row
      bar_mx[c]    c's block row max (parity 0), then c's row sum (parity 1)
      bar_p[c]     c wrote P_s[c] (+ fence)                    -> c' may multiply it
    The running max is _build_seesaw's chain (_chain_macros, the same code) over one pair of blocks, started
    afresh per query: WG0 publishes m0 = its block's max and issues its first P V from registers at m0; WG1
    takes m1 = max(m0, its block's max) and publishes it; WG0 then moves its P to m1 for WG1 and rescales its
    output and row sum. (With the
    symmetric exchange this kernel had before, both taking the larger of the two maxima at once, it took the
    same 13.1-13.7 ms at S = 262,144, benchmarks/results/profile-h200/window-ring-chain/, but no longer gave
    the listed kernel's bits once that kernel chained its max in 9eb3f2a.)"""
    import tilelang.language as T

    HB = BLOCK_HEADS
    G = heads // HB
    DH = D // 2
    bf16, f32 = T.bfloat16, T.float32
    M_INIT = -1.0e30
    finalize = _epilogue_macros(T, HB, with_sink, return_lse)
    inverse_rope = _inverse_rope_macro(T, HB, rope)
    chain_max, p0_to_m1 = _chain_macros(T, HB, BI, DH, M_INIT)
    load_q = _q_load_macro(T, HB, D, 0)
    RC, RD = rope[0], rope[1]
    VEC = D // 128                # channels of the new row each producer thread moves (8 bytes)
    CHUNKS = DH // ROPE_TILE      # output chunks per consumer (4: D = 512)
    if D != KERNEL_DIM_V or BI != 64:
        raise ValueError(f"seesaw-ring takes D = {KERNEL_DIM_V} with 64-key blocks, got D = {D}, BI = {BI}")
    # the chunk (of consumer 1's) that holds the rotated channels; -1: none (rope_fusable keeps them in one)
    ROPE_CHUNK = (RC - DH) // ROPE_TILE if RD > 0 else -1
    if RD > 0 and (RC + RD - 1 - DH) // ROPE_TILE != ROPE_CHUNK:
        raise ValueError(f"seesaw-ring rotates channels inside one 64-channel chunk, got [{RC}, {RC + RD})")

    def position(Seg, s_i, p_first):
        """(position in its sequence, the sequence's first kv row) of query row s_i."""
        if packed:
            return Seg[s_i, 0], Seg[s_i, 1]
        return p_first + s_i, 0

    @T.macro
    def store_chunk(c, k, acc_o, P_s, X_s, Out, RopeCos, RopeSin, Seg, b_i, s_i, s_pos, h0, P):
        # output channels c * DH + [64k, 64k + 64): even k through P_s[c], odd k through X_s[c]; the tile is
        # rewritten once the store two chunks back has read it (cp.async.bulk.wait_group.read 1, by the thread
        # that issued the stores; the others have no group to wait for)
        T.tma_store_wait(1)
        T.sync_threads(6 + c, 128)
        if k % 2 == 0:
            T.copy(acc_o[:, k * ROPE_TILE:(k + 1) * ROPE_TILE], P_s[c, :, :])
        else:
            T.copy(acc_o[:, k * ROPE_TILE:(k + 1) * ROPE_TILE], X_s[c, :, :])
        if c == 1 and k == ROPE_CHUNK:
            # the chunk of the rotated channels (odd: the last one) is rotated from X_s[1] into P_s[1], the rest
            # of it copied beside them (in place would need a barrier between each thread's reads and writes),
            # once P_s[1]'s own chunk has been read; it is stored from P_s[1]
            T.tma_store_wait(0)
            T.sync_threads(6 + c, 128)
            inverse_rope(X_s, P_s, RopeCos, RopeSin, Seg, s_i, s_pos, P, tile=1, src_tile=1)
            if RC % ROPE_TILE > 0:
                for h, j in T.Parallel(HB, RC % ROPE_TILE):
                    P_s[1, h, j] = X_s[1, h, j]
        T.fence_proxy_async()              # the staging tile is read by the TMA store (async proxy)
        T.sync_threads(6 + c, 128)
        if k % 2 == 0 or (c == 1 and k == ROPE_CHUNK):
            T.tma_copy(P_s[c, :, :], Out[b_i, s_i, h0:h0 + HB, c * DH + k * ROPE_TILE:c * DH + (k + 1) * ROPE_TILE])
        else:
            T.tma_copy(X_s[c, :, :], Out[b_i, s_i, h0:h0 + HB, c * DH + k * ROPE_TILE:c * DH + (k + 1) * ROPE_TILE])

    @T.macro
    def consumer(c, Q_s, K_s, P_s, X_s, mx_s, sum_s, Sink, Out, Lse, RopeCos, RopeSin, Seg, acc_s, acc_o, m_i, m_blk,
                 m_peer, alpha, l_i, inv, lse_frag, bar_q, bar_q_free, bar_kv_full, bar_kv_free, bar_mx, bar_p, scale2,
                 s_begin, p_first, n_q, b_i, h0, P, P_r):
        # m_peer, alpha and P_r are WG0's alone (as in _build_seesaw): WG1 passes None for them
        for i in T.serial(n_q):
            s_i = s_begin + i
            s_pos, _ = position(Seg, s_i, p_first)
            # slot c * BI + j is a key unless it still holds a row < 0 (the first RING - 1 positions)
            for h, j in T.Parallel(HB, BI):
                acc_s[h, j] = T.if_then_else((s_pos >= RING - 1) | (c * BI + j <= s_pos), 0, -T.infinity(f32))
            T.barrier_wait(bar_kv_full, i & 1)
            T.barrier_wait(bar_q, i & 1)
            T.fence_proxy_async()          # cp.async / st.shared (generic proxy) -> wgmma (async proxy)
            T.wgmma_gemm(Q_s, K_s[c, :, :], acc_s, transpose_B=True)
            T.wait_wgmma(0)
            T.warpgroup_fence_operand(acc_s, num_regs=HB * BI // 128)
            T.barrier_arrive(bar_q_free)
            T.reduce_max(acc_s, m_blk, dim=1, clear=True)
            # the listed seesaw's chain over its one pair of blocks (the running max starts afresh per query)
            chain_max(c, m_i, None, m_blk, mx_s, bar_mx, i & 1, 0, scale2)
            for h, j in T.Parallel(HB, BI):
                acc_s[h, j] = T.exp2(acc_s[h, j] * scale2 - m_i[h])
            T.reduce_sum(acc_s, l_i, dim=1)
            if c == 0:
                # P0 V0 from registers at m0, under WG1's softmax; then P0 moved to m1 for WG1
                p0_to_m1(acc_s, P_r, K_s, acc_o, m_i, m_peer, alpha, l_i, mx_s, bar_mx, i & 1, 0, True)
            # P_s[c] also staged the previous query's output: those stores must have read it (the last group
            # is X_s[c]'s, except consumer 1's rotated chunk, stored from P_s[1])
            T.tma_store_wait(0 if c == 1 and ROPE_CHUNK == CHUNKS - 1 else 1)
            T.sync_threads(6 + c, 128)
            T.copy(acc_s, P_s[c, :, :])
            T.fence_proxy_async()          # P_s is read by wgmma (the peer's too)
            T.barrier_arrive(bar_p[c])
            if c == 0:
                T.wait_wgmma(0)
                T.warpgroup_fence_operand(acc_o, num_regs=HB * DH // 128)
                for h, d in T.Parallel(HB, DH):
                    acc_o[h, d] *= alpha[h]
                T.barrier_wait(bar_p[1], i & 1)
                T.gemm(P_s[1, :, :], K_s[1, :, 0:DH], acc_o)
            else:
                # block 0 first, as the listed seesaw does
                T.barrier_wait(bar_p[0], i & 1)
                T.gemm(P_s[0, :, :], K_s[0, :, DH:D], acc_o, clear_accum=True)
                T.gemm(P_s[1, :, :], K_s[1, :, DH:D], acc_o)
            T.barrier_arrive(bar_kv_free)
            for h in T.Parallel(HB):
                sum_s[c, h] = l_i[h]
            T.barrier_arrive(bar_mx[c])
            T.barrier_wait(bar_mx[1 - c], 1)
            for h in T.Parallel(HB):
                l_i[h] = l_i[h] + sum_s[1 - c, h]
            finalize(m_i, l_i, inv, lse_frag, Sink, h0)
            if return_lse and c == 0:
                for h in T.Parallel(HB):
                    Lse[b_i, s_i, h0 + h] = lse_frag[h]
            for h, d in T.Parallel(HB, DH):
                acc_o[h, d] *= inv[h]
            # the peer read P_s[c] (its last P V) before its row-sum arrival, waited above. The chunks are
            # written out one call each: in a loop TileLang would make k a runtime variable
            store_chunk(c, 0, acc_o, P_s, X_s, Out, RopeCos, RopeSin, Seg, b_i, s_i, s_pos, h0, P)
            store_chunk(c, 1, acc_o, P_s, X_s, Out, RopeCos, RopeSin, Seg, b_i, s_i, s_pos, h0, P)
            store_chunk(c, 2, acc_o, P_s, X_s, Out, RopeCos, RopeSin, Seg, b_i, s_i, s_pos, h0, P)
            store_chunk(c, 3, acc_o, P_s, X_s, Out, RopeCos, RopeSin, Seg, b_i, s_i, s_pos, h0, P)

    @T.macro
    def fill_ring(KV, K_s, p, b_i, pos, row0):
        # the window of the query at `pos` (its sequence's rows from kv row row0): slot j takes row
        # pos - ((pos - j) mod RING), zero-filled (src-size 0, nothing read) where that is < 0
        for st in T.unroll(2):
            for r in T.serial(BI // 16):
                j = st * BI + r * 16 + p // 8
                rj = j + RING * ((pos + RING - j) // RING) - RING
                for u in T.unroll(D // 64):
                    T.ptx_cp_async(T.access_ptr(K_s[st, r * 16 + p // 8, u * 64 + (p % 8) * 8], "w", 8),
                                   T.access_ptr(KV[b_i, row0 + T.max(rj, 0), u * 64 + (p % 8) * 8], "r", 8),
                                   8, rj >= 0)

    @T.macro
    def body(Q, KV, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
             bound_m, B, Sq, R, P, span):
        with T.Kernel(T.ceildiv(Sq, span) * G, B, threads=384) as (bx, by):
            Q_s = T.alloc_shared([HB, D], bf16)
            K_s = T.alloc_shared([2, BI, D], bf16)          # the ring: slot j is K_s[j // BI, j % BI]
            P_s = T.alloc_shared([2, HB, BI], bf16)         # each consumer's P; then its even output chunks
            X_s = T.alloc_shared([2, HB, ROPE_TILE], bf16)  # each consumer's odd output chunks
            mx_s = T.alloc_shared([2, 2, HB], f32)
            sum_s = T.alloc_shared([2, HB], f32)

            acc_s0 = T.alloc_fragment([HB, BI], f32)
            acc_s1 = T.alloc_fragment([HB, BI], f32)
            acc_ol = T.alloc_fragment([HB, DH], f32)
            acc_or = T.alloc_fragment([HB, DH], f32)
            m_i0 = T.alloc_fragment([HB], f32)
            m_i1 = T.alloc_fragment([HB], f32)
            m_blk0 = T.alloc_fragment([HB], f32)
            m_blk1 = T.alloc_fragment([HB], f32)
            m_peer0 = T.alloc_fragment([HB], f32)
            alpha0 = T.alloc_fragment([HB], f32)
            l_i0 = T.alloc_fragment([HB], f32)
            l_i1 = T.alloc_fragment([HB], f32)
            inv0 = T.alloc_fragment([HB], f32)
            inv1 = T.alloc_fragment([HB], f32)
            lse0 = T.alloc_fragment([HB], f32)
            lse1 = T.alloc_fragment([HB], f32)
            P_r = T.alloc_fragment([HB, BI], bf16)
            row_r = T.alloc_local([VEC], bf16)

            bar_q = T.alloc_barrier(128)
            bar_q_free = T.alloc_barrier(256)
            bar_kv_full = T.alloc_barrier(128)
            bar_kv_free = T.alloc_barrier(256)
            bar_mx = T.alloc_barrier([128, 128])
            bar_p = T.alloc_barrier([128, 128])

            h0 = (bx % G) * HB
            s_begin = (bx // G) * span
            n_q = T.min(span, Sq - s_begin)
            b_i = by
            tx = T.get_thread_binding()
            scale2 = sm_scale * LOG2E

            if tx < 128:
                T.set_max_nreg(216, 1)
                consumer(0, Q_s, K_s, P_s, X_s, mx_s, sum_s, Sink, Out, Lse, RopeCos, RopeSin, Seg, acc_s0, acc_ol,
                         m_i0, m_blk0, m_peer0, alpha0, l_i0, inv0, lse0, bar_q, bar_q_free, bar_kv_full,
                         bar_kv_free, bar_mx, bar_p, scale2, s_begin, pos0, n_q, b_i, h0, P, P_r)
            elif tx < 256:
                T.set_max_nreg(216, 1)
                consumer(1, Q_s, K_s, P_s, X_s, mx_s, sum_s, Sink, Out, Lse, RopeCos, RopeSin, Seg, acc_s1, acc_or,
                         m_i1, m_blk1, None, None, l_i1, inv1, lse1, bar_q, bar_q_free, bar_kv_full,
                         bar_kv_free, bar_mx, bar_p, scale2, s_begin, pos0, n_q, b_i, h0, P, None)
            else:
                T.set_max_nreg(72, 0)
                p = tx - 256
                # query row s is kv row pos0 + s (packed: its token), the row it adds to its window
                last = pos0 + Sq - 1
                load_q(Q, Q_s, None, p, b_i, s_begin, h0)
                T.cp_async_barrier_noinc(bar_q)
                pos, row0 = position(Seg, s_begin, pos0)
                fill_ring(KV, K_s, p, b_i, pos, row0)
                T.cp_async_barrier_noinc(bar_kv_full)
                # the row query 1 adds, into registers a query ahead (a real row when there is none)
                for v in T.vectorized(VEC):
                    row_r[v] = KV[b_i, T.min(pos0 + s_begin + 1, last), p * VEC + v]
                for i in T.serial(1, n_q):
                    T.barrier_wait(bar_q_free, (i - 1) & 1)
                    load_q(Q, Q_s, None, p, b_i, s_begin + i, h0)
                    T.cp_async_barrier_noinc(bar_q)
                    T.barrier_wait(bar_kv_free, (i - 1) & 1)
                    pos_i, row0_i = position(Seg, s_begin + i, pos0)
                    if pos_i == 0:
                        # a sequence starts (packed): its own window, nothing of the one before
                        fill_ring(KV, K_s, p, b_i, pos_i, row0_i)
                        T.cp_async_barrier_noinc(bar_kv_full)
                    else:
                        slot = pos_i % RING
                        for v in T.vectorized(VEC):
                            K_s[slot // BI, slot % BI, p * VEC + v] = row_r[v]
                        T.fence_proxy_async()
                        T.barrier_arrive(bar_kv_full)
                    for v in T.vectorized(VEC):
                        row_r[v] = KV[b_i, T.min(pos0 + s_begin + i + 1, last), p * VEC + v]
                # stay alive until the consumers are done with everything this warpgroup loaded
                T.barrier_wait(bar_q_free, (n_q - 1) & 1)
                T.barrier_wait(bar_kv_free, (n_q - 1) & 1)

    return _signature(T, body, heads, D, D, RING, with_sink, return_lse)


def _build_pipelined(heads, D, DV, NI, with_sink, return_lse, BI):
    import tilelang.language as T

    HB = BLOCK_HEADS
    G = heads // HB
    DT = D - DV
    NB = NI // BI
    bf16, f32 = T.bfloat16, T.float32
    M_INIT = -1.0e30
    finalize = _epilogue_macros(T, HB, with_sink, return_lse)
    online_softmax = _softmax_macro(T, HB, BI)

    @T.macro
    def body(Q, KV, Indices, Sink, Out, Lse, RopeCos, RopeSin, Seg, sm_scale, pos0, bound_w, bound_k,
             bound_m, B, Sq, R, P, span):
        # no block skipping here (the bound is a promise the pipelined walk does not need)
        with T.Kernel(Sq * G, B, threads=256) as (bx, by):
            Q_s = T.alloc_shared([HB, DV], bf16)
            K_s = T.alloc_shared([BI, DV], bf16)
            if DT > 0:
                Qt_s = T.alloc_shared([HB, DT], bf16)
                Kt_s = T.alloc_shared([BI, DT], bf16)
            P_s = T.alloc_shared([HB, BI], bf16)
            O_s = T.alloc_shared([HB, DV], bf16)

            acc_s = T.alloc_fragment([HB, BI], f32)
            acc_o = T.alloc_fragment([HB, DV], f32)
            m_i = T.alloc_fragment([HB], f32)
            m_prev = T.alloc_fragment([HB], f32)
            alpha = T.alloc_fragment([HB], f32)
            l_i = T.alloc_fragment([HB], f32)
            l_blk = T.alloc_fragment([HB], f32)
            inv = T.alloc_fragment([HB], f32)
            lse_frag = T.alloc_fragment([HB], f32)

            s_i = bx // G
            h0 = (bx % G) * HB
            b_i = by
            scale2 = sm_scale * LOG2E

            T.copy(Q[b_i, s_i, h0:h0 + HB, 0:DV], Q_s)
            if DT > 0:
                T.copy(Q[b_i, s_i, h0:h0 + HB, DV:D], Qt_s)
            T.fill(m_i, M_INIT)
            T.fill(l_i, 0)
            T.fill(acc_o, 0)

            for k in T.Pipelined(NB, num_stages=2):
                # gather. An empty slot (-1) is redirected to row R, one past the end: the
                # safe-memory pass guards every gathered load with 0 <= row < R, so the
                # row becomes a predicated-off cp.async (zero-filled, nothing read). An
                # explicit if_then_else(valid, load, 0) would be correct too but stops
                # TileLang from pipelining the copy (it lowers to synchronous loads).
                # tests/test_attention_lowering.py asserts the guard is in the source.
                for j, d in T.Parallel(BI, DV):
                    K_s[j, d] = KV[b_i, T.if_then_else(Indices[b_i, s_i, k * BI + j] >= 0,
                                                       Indices[b_i, s_i, k * BI + j], R), d]
                if DT > 0:
                    for j, d in T.Parallel(BI, DT):
                        Kt_s[j, d] = KV[b_i, T.if_then_else(Indices[b_i, s_i, k * BI + j] >= 0,
                                                            Indices[b_i, s_i, k * BI + j], R),
                                        DV + d]
                for h, j in T.Parallel(HB, BI):
                    acc_s[h, j] = T.if_then_else(
                        (Indices[b_i, s_i, k * BI + j] >= 0) & (Indices[b_i, s_i, k * BI + j] < R),
                        0, -T.infinity(f32))
                T.gemm(Q_s, K_s, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                if DT > 0:
                    T.gemm(Qt_s, Kt_s, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                online_softmax(acc_s, m_i, m_prev, alpha, l_i, l_blk, scale2)
                for h, d in T.Parallel(HB, DV):
                    acc_o[h, d] *= alpha[h]
                T.copy(acc_s, P_s)
                T.gemm(P_s, K_s, acc_o, policy=T.GemmWarpPolicy.FullRow)

            finalize(m_i, l_i, inv, lse_frag, Sink, h0)
            if return_lse:
                for h in T.Parallel(HB):
                    Lse[b_i, s_i, h0 + h] = lse_frag[h]
            for h, d in T.Parallel(HB, DV):
                acc_o[h, d] *= inv[h]
            T.copy(acc_o, O_s)
            T.fence_proxy_async()  # every writer, before a TMA store reads the tile
            T.copy(O_s, Out[b_i, s_i, h0:h0 + HB, :])

    return _signature(T, body, heads, D, DV, NI, with_sink, return_lse)


# ----------------------------------------------------------------------------------------
# compile / lower
# ----------------------------------------------------------------------------------------
def _pass_configs(variant: str) -> dict:
    # fast math: exp2/log2/div become ex2/lg2/rcp.approx (softmax is WG0's critical path);
    # nvcc's fast math keeps inf semantics, which the -inf masking relies on
    return {"tl.enable_fast_math": True}


def _shape_class(heads, dim_qk, dim_v, num_indices, with_sink, return_lse, variant,
                 block_keys=64, rope=NO_ROPE):
    d_qk, d_v = kernel_dims(dim_qk, dim_v)
    return (padded_heads(heads), d_qk, d_v, padded_num_indices(num_indices, block_keys),
            bool(with_sink), bool(return_lse), variant, block_keys, tuple(rope))


# The TileLang front end (Python AST builder) is not documented as thread-safe; building is
# cheap (~0.4 s), so it is serialised. Lowering + nvcc (tilelang.compile) may run in threads,
# as tilelang.par_compile does.
_BUILD_LOCK = threading.Lock()


def _build_locked(*args, **kwargs):
    with _BUILD_LOCK:
        return build_sparse_mla_fwd(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _compiled(heads_p, dim_qk, dim_v_k, ni_p, with_sink, return_lse, variant, block_keys, rope,
              arch):
    import tilelang

    func = _build_locked(heads_p, dim_qk, dim_v_k, ni_p, with_sink, return_lse, variant,
                         block_keys, rope)
    return tilelang.compile(func, out_idx=None, target={"kind": "cuda", "arch": arch},
                            pass_configs=_pass_configs(variant))


def get_kernel(heads, dim_qk, dim_v, num_indices, with_sink, return_lse, variant="ws",
               block_keys=64, arch=TARGET_ARCH, rope=NO_ROPE):
    """The compiled (cached) TileLang kernel of a shape class (needs nvcc, not a GPU)."""
    return _compiled(*_shape_class(heads, dim_qk, dim_v, num_indices, with_sink, return_lse,
                                   variant, block_keys, rope), arch)


def _precompile_job(job):
    t = time.time()
    try:
        get_kernel(*job)
        return job, None, round(time.time() - t, 2)
    except Exception as e:  # noqa: BLE001
        return job, f"{type(e).__name__}: {e}"[-3000:], round(time.time() - t, 2)


def precompile(classes, variants=VARIANTS, max_workers=None, arch=TARGET_ARCH) -> dict:
    """Compile shape classes in parallel worker processes, filling TileLang's on-disk kernel
    cache, so the calling process then loads each kernel in about a second.

    classes: iterable of (heads, dim_qk, dim_v, num_indices, with_sink, return_lse[, rope]) with rope
    the fused inverse RoPE's (col0, rot_dim, seg) (default NO_ROPE; see build_sparse_mla_fwd).
    Returns {(heads, ..., return_lse, variant, rope): (error or None, seconds)}. Processes, not
    threads: the TileLang front end holds the GIL for most of the ~5 s lowering."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tilelang import env as tl_env

    if not tl_env.is_cache_enabled():  # children could not hand their kernels back
        return {}
    jobs = []
    for c in classes:
        rope = tuple(c[6]) if len(c) > 6 else NO_ROPE
        for v in variants:
            j = (*c[:6], v, 64, arch, rope)     # get_kernel's positional arguments
            if j not in jobs:
                jobs.append(j)
    if not jobs:
        return {}
    workers = max_workers or max(1, min(len(jobs), (os.cpu_count() or 2) - 1))
    out = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for job, err, dt in ex.map(_precompile_job, jobs):
            out[(*job[:7], job[9])] = (err, dt)
    return out


# ----------------------------------------------------------------------------------------
# the wrapper
# ----------------------------------------------------------------------------------------
def _check_tensor(name, t, torch):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def validate_sparse_mla_inputs(q, kv, indices, sm_scale, dim_v, sink=None, variant="ws",
                               out=None, pos0=0, window=0, causal_bound=None, need_cuda=True,
                               rope_cos=None, rope_sin=None, rope_seg=None):
    """All checks that need no GPU, in the order: types, dtypes, ranks, sizes, dims,
    contiguity, scalars, the inverse RoPE's tables, and last the device (need_cuda=False: stop
    before the CUDA checks, for the CPU reference of the same call). Raises TypeError / ValueError."""
    import torch

    _check_tensor("q", q, torch)
    _check_tensor("kv", kv, torch)
    for name, v in (("pos0", pos0), ("window", window)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if indices is None:
        # window-only: the key list is implicit, slot j of the query at pos0 + i is row max(0, p-W+1) + j
        if window < 1:
            raise ValueError("indices=None means the sliding window alone: give window >= 1")
        if variant not in WS_FAMILIES:
            raise ValueError(f"indices=None (the implicit window) runs on the {WS_FAMILIES} variants only, not "
                             f"{variant!r}")
        if causal_bound is not None:
            raise ValueError("causal_bound describes a key list; with indices=None there is none")
        if rope_seg is not None and not (ring_window(q.shape[-1] if q.dim() == 4 else 0, window, variant)):
            raise ValueError(f"a packed batch's implicit windows (indices=None with rope_seg) run on the ring kernel "
                             f"only: variant 'seesaw', {KERNEL_DIM_V}-dim rows and window = {RING}; got variant "
                             f"{variant!r}, window {window}. Pass the windows as a key list (indices) instead")
        if kv.dim() == 3 and q.dim() == 4 and pos0 + q.shape[1] > kv.shape[1]:
            raise ValueError(f"the implicit window reads kv rows up to pos0 + Sq - 1 = {pos0 + q.shape[1] - 1}, "
                             f"but kv has {kv.shape[1]} rows")
        # a shape-only stand-in for the checks below; it takes no part in the device checks
        indices = torch.empty((q.shape[0] if q.dim() == 4 else 1, q.shape[1] if q.dim() == 4 else 1, window),
                              dtype=torch.int32, device="meta")
        listed = None
    else:
        listed = indices
    if causal_bound is not None:
        if (not isinstance(causal_bound, tuple) or len(causal_bound) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in causal_bound)
                or causal_bound[0] < 0 or causal_bound[1] < 1):
            raise ValueError(f"causal_bound must be (k_sel >= 0, ratio >= 1) ints, got {causal_bound!r}")
    _check_tensor("indices", indices, torch)
    if sink is not None:
        _check_tensor("sink", sink, torch)
    if out is not None:
        _check_tensor("out", out, torch)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    for name, t in (("q", q), ("kv", kv)):
        if t.dtype != torch.bfloat16:
            raise TypeError(f"{name} must be torch.bfloat16 (bf16), got {t.dtype}; "
                            f"convert with {name}.to(torch.bfloat16)")
    if indices.dtype != torch.int32:
        raise TypeError(f"indices must be torch.int32, got {indices.dtype}; "
                        "convert with indices.to(torch.int32)")
    if sink is not None and sink.dtype != torch.float32:
        raise TypeError(f"sink must be torch.float32 (fp32), got {sink.dtype}; "
                        "convert with sink.float()")
    if q.dim() != 4:
        raise ValueError(f"q must have shape [B, Sq, H, D] (4 dims), got {tuple(q.shape)}")
    if kv.dim() != 3:
        raise ValueError(f"kv must have shape [B, R, D] (3 dims: one latent head), got "
                         f"{tuple(kv.shape)}")
    if indices.dim() != 3:
        raise ValueError(f"indices must have shape [B, Sq, NI] (3 dims), got "
                         f"{tuple(indices.shape)}")
    B, Sq, H, D = q.shape
    if kv.shape[0] != B or kv.shape[2] != D:
        raise ValueError(f"kv must be [B={B}, R, D={D}] to match q {tuple(q.shape)}, got "
                         f"{tuple(kv.shape)}")
    if indices.shape[0] != B or indices.shape[1] != Sq:
        raise ValueError(f"indices must be [B={B}, Sq={Sq}, NI] to match q, got "
                         f"{tuple(indices.shape)}")
    if indices.shape[2] < 1:
        raise ValueError("indices must have at least one slot per query (NI >= 1); use -1 "
                         "for empty slots")
    if H < 1:
        raise ValueError("q must have at least one head")
    if sink is not None and (sink.dim() != 1 or sink.shape[0] != H):
        raise ValueError(f"sink must have shape [H={H}], got {tuple(sink.shape)}")
    if isinstance(dim_v, bool) or not isinstance(dim_v, int):
        raise TypeError(f"dim_v must be an int, got {type(dim_v).__name__}")
    if need_cuda:
        kernel_dims(D, dim_v)
    elif not 1 <= dim_v <= D:
        raise ValueError(f"dim_v must be in [1, D = {D}] (the values are the first dim_v channels of kv), got {dim_v}")
    if kv.shape[1] >= 2**31 or indices.shape[2] >= 2**31 // 2:
        raise ValueError("kv rows and NI must fit in int32 (row ids are int32)")
    if out is not None:
        if out.dtype != torch.bfloat16:
            raise TypeError(f"out must be torch.bfloat16 (bf16), got {out.dtype}")
        if tuple(out.shape) != (B, Sq, H, dim_v):
            raise ValueError(f"out must have shape [B, Sq, H, dim_v] = {(B, Sq, H, dim_v)}, got "
                             f"{tuple(out.shape)}")
    for name, t in (("q", q), ("kv", kv), ("indices", listed), ("sink", sink), ("out", out)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (row-major); call {name}.contiguous()")
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
        raise TypeError(f"sm_scale must be a real number (Python float), got "
                        f"{type(sm_scale).__name__}; use float(...)")
    if not (math.isfinite(float(sm_scale)) and float(sm_scale) > 0):
        raise ValueError(f"sm_scale must be a positive finite float, got {sm_scale}")
    _check_rope_args(q, dim_v, pos0, rope_cos, rope_sin, rope_seg, implicit=listed is None)
    # device last: everything above is checkable (and tested) on CPU tensors
    devs = {t.device for t in (q, kv, listed, sink, out) if t is not None}
    if len(devs) > 1:
        raise ValueError(f"q, kv, indices (and sink, out) must be on the same device, got "
                         f"{sorted(str(d) for d in devs)}")
    dev = q.device
    if not need_cuda:
        return
    if dev.type != "cuda":
        raise ValueError(f"sparse_mla_fwd needs a CUDA device (Hopper, sm_90); the tensors are "
                         f"on {dev}. Move them with .cuda() or use a torch reference on CPU.")
    major, minor = torch.cuda.get_device_capability(dev)
    if major != 9:
        raise RuntimeError(f"sparse_mla_fwd is built for sm_90a (H100/H200, wgmma); device "
                           f"{dev} is sm_{major}{minor}")
    for name, t in (("q", q), ("kv", kv), ("indices", listed), ("out", out)):
        if t is not None and t.data_ptr() % 16:
            raise ValueError(f"{name} must start on a 16-byte boundary (cp.async gathers 16 B); "
                             f"call {name}.clone()")


def sparse_mla_fwd(q, kv, indices, sm_scale, dim_v, sink=None, return_lse=False,
                   variant=None, out=None, *, pos0=0, window=0, causal_bound=None,
                   rope_cos=None, rope_sin=None, rope_seg=None):
    """Sparse MLA forward. q [B,Sq,H,D] bf16, kv [B,R,D] bf16, indices [B,Sq,NI] int32
    (-1 = empty; ids outside [0, R) are treated as empty), sink [H] fp32 or None.
    Returns out [B,Sq,H,dim_v] bf16, and lse [B,Sq,H] fp32 (natural log) if return_lse.
    out: optional preallocated contiguous [B,Sq,H,dim_v] bf16 tensor, written and returned.
    variant: VARIANTS, or None for DEFAULT_VARIANT (seesaw).

    pos0: the position of query row 0 (the rows are positions pos0, pos0 + 1, ...).
    indices=None: the sliding window alone, `window` slots (row max(0, p-window+1) + j, valid while
      <= p): no key list exists (window-only layers). A window of RING rows on the seesaw split runs on the
      persistent ring kernel, which holds the rows in slot order r % RING: the bits of the listed kernel
      over ring_window_ids, within rounding of the in-order window. With rope_seg (a packed batch, B = 1,
      query row s being kv row pos0 + s) each query's window is of its own sequence: position rope_seg[s, 0],
      rows from rope_seg[s, 1] (the ring kernel only, see ring_window).
    causal_bound=(k_sel, ratio): a promise that each list is `window` window slots then selected
      slots, each part -1 padded at the end, with at most min(k_sel, (p+1)//ratio) selected rows:
      key blocks past that are skipped, not walked (the composer's lists keep it).
    rope_cos, rope_sin: fp32 RoPE tables [P, rot_dim // 2] (kernels_triton.rope.tables): the output's
      last rot_dim channels are rotated back (inverse RoPE) at each query's position, pos0 + row, or with
      rope_seg (a packed batch's segment rows [Sq, 4], B = 1) the row's position in its own sequence.
      The ws kernel does it in its epilogue (rope_fusable); otherwise kernels_triton's RoPE kernel runs on
      the output afterwards. Either way the bits are kernels_triton.rope.kernel.apply_rope_'s."""
    if variant is None:
        variant = DEFAULT_VARIANT
    validate_sparse_mla_inputs(q, kv, indices, sm_scale, dim_v, sink, variant, out, pos0, window, causal_bound,
                               rope_cos=rope_cos, rope_sin=rope_sin, rope_seg=rope_seg)
    rot_dim = 0 if rope_cos is None else 2 * rope_cos.shape[1]
    import torch

    B, Sq, H, D = q.shape
    implicit = indices is None
    R, NI = kv.shape[1], (window if implicit else indices.shape[2])
    if implicit:
        bound = (window, 0, 1)
    elif causal_bound is not None:
        bound = (window, causal_bound[0], causal_bound[1])
    else:
        bound = (NI, 0, 1)
    if out is None:
        out = torch.empty((B, Sq, H, dim_v), dtype=torch.bfloat16, device=q.device)
    lse = torch.empty((B, Sq, H), dtype=torch.float32, device=q.device) if return_lse else None
    if B == 0 or Sq == 0:
        return (out, lse) if return_lse else out
    if R == 0:  # nothing can be valid: zeros, LSE = sink or -inf
        out.zero_()
        if rot_dim:
            _rope_after(out, rope_cos, rope_sin, pos0, rope_seg)
        if return_lse:
            lse.copy_(sink.view(1, 1, H).expand(B, Sq, H) if sink is not None
                      else torch.full_like(lse, float("-inf")))
        return (out, lse) if return_lse else out

    if implicit:
        # the window the ring holds on the seesaw split: the persistent kernel (a packed batch's too, its
        # windows kept to each sequence); any other, the per-query walk
        if ring_window(D, window, variant):
            kv_variant = "seesaw-ring-seg" if rope_seg is not None else "seesaw-ring"
        else:
            kv_variant = f"{variant}-window"
    elif causal_bound is not None and variant in WS_FAMILIES:
        # a short list on the seesaw split walks every block: the bound is only a promise, and ignoring it
        # gives the same bits (the skipped blocks hold -1 slots alone)
        short = variant == "seesaw" and padded_num_indices(NI) < SEESAW_BOUNDED_MIN_NI
        kv_variant = variant if short else f"{variant}-bounded"
    else:
        kv_variant = variant
    fused = rot_dim > 0 and kv_variant != "pipelined" and rope_fusable(dim_v, rot_dim)
    if kv_variant.startswith("seesaw-ring") and (dim_v - rot_dim) // ROPE_TILE != (dim_v - 1) // ROPE_TILE:
        fused = False       # the ring kernel rotates inside one 64-channel output chunk only
    rope = (dim_v - rot_dim, rot_dim, rope_seg is not None) if fused else NO_ROPE
    sc = _shape_class(H, D, dim_v, NI, sink is not None, return_lse, kv_variant, rope=rope)
    Hp, _, DVk, NIp = sc[0], sc[1], sc[2], sc[3]
    with torch.cuda.device(q.device):
        kernel = _compiled(*sc, TARGET_ARCH)
        qk = q
        if Hp != H:  # padded heads are zero queries; their rows are dropped below
            qk = torch.zeros((B, Sq, Hp, D), dtype=q.dtype, device=q.device)
            qk[:, :, :H] = q
        idx = indices
        if implicit:     # not read: a [1, 1, NIp] stand-in fills the parameter
            idx = torch.empty((1, 1, NIp), dtype=torch.int32, device=q.device)
        elif NIp != NI:
            idx = torch.full((B, Sq, NIp), -1, dtype=torch.int32, device=q.device)
            idx[:, :, :NI] = indices
        sk = None
        if sink is not None:
            sk = sink if Hp == H else torch.cat([sink, sink.new_zeros(Hp - H)])
        direct = Hp == H and DVk == dim_v
        o_k = out if direct else torch.empty((B, Sq, Hp, DVk), dtype=torch.bfloat16,
                                             device=q.device)
        l_k = None
        if return_lse:
            l_k = lse if Hp == H else torch.empty((B, Sq, Hp), dtype=torch.float32,
                                                  device=q.device)
        args = [qk, kv, idx]
        if sk is not None:
            args.append(sk)
        args.append(o_k)
        if l_k is not None:
            args.append(l_k)
        if fused:       # the stand-ins of the tables and segment rows are never read
            args += [rope_cos, rope_sin]
        else:
            args += [torch.empty((1, 1), dtype=torch.float32, device=q.device)] * 2
        args.append(rope_seg if rope_seg is not None and (fused or kv_variant == "seesaw-ring-seg")
                    else torch.empty((1, 4), dtype=torch.int32, device=q.device))
        span = ring_span(B * (Hp // BLOCK_HEADS), Sq, q.device) if kv_variant == "seesaw-ring" else 1
        args += [float(sm_scale), int(pos0), *(int(x) for x in bound), span]
        kernel(*args)
        if not direct:
            out.copy_(o_k[:, :, :H, :dim_v])
        if rot_dim and not fused:
            _rope_after(out, rope_cos, rope_sin, pos0, rope_seg)
        if return_lse and l_k is not lse:
            lse.copy_(l_k[:, :, :H])
    return (out, lse) if return_lse else out


def ring_window_ids(positions, window: int = RING):
    """[n, window] int32: the rows the ring kernel holds for the queries at `positions` (a torch tensor), slot j
    row p - ((p - j) mod window), -1 where that is < 0: the window in the ring's order, as a key list for the
    listed kernel (which then gives the ring kernel's bits)."""
    import torch

    p = positions.long()[:, None]
    r = p - torch.remainder(p - torch.arange(window, device=positions.device)[None, :], window)
    return torch.where(r >= 0, r, torch.full_like(r, -1)).to(torch.int32)


def ring_window(dim_qk: int, window: int, variant: Optional[str] = None) -> bool:
    """Whether an implicit window (indices=None) runs on the persistent ring kernel, "seesaw-ring": the seesaw
    split (variant None means DEFAULT_VARIANT) of 512-dim rows, and a window of RING rows (V4's). Only that
    kernel takes a packed batch's implicit windows."""
    return (variant or DEFAULT_VARIANT) == "seesaw" and dim_qk == KERNEL_DIM_V and window == RING


RING_WAVES = 4       # the persistent ring kernel's CTAs: about this many per SM (equal work each, so whole waves)


def ring_span(sequences: int, sq: int, device) -> int:
    """Queries per CTA of "seesaw-ring" for `sequences` (batch x head groups) of sq queries: each sequence cut
    into equal spans, about RING_WAVES CTAs per SM in all (a CTA's start, its Q and 128-row ring, is a few
    microseconds against a span's milliseconds)."""
    import torch

    sms = torch.cuda.get_device_properties(device).multi_processor_count
    parts = max(1, -(-RING_WAVES * sms // max(1, sequences)))
    return max(1, -(-sq // parts))


def attend(q, kv, keys, out, sink=None, *, scale: float, v_dim: int, pos0: int = 0, window: int = 0,
           causal_bound=None, rope_cos=None, rope_sin=None, seg=None, variant: Optional[str] = None) -> None:
    """The composed program's op: out [n,H,Dv] <- attention of q [n,H,D] (positions pos0..) over the rows
    keys [n,NI] of kv [R,D] (one batch element), or over the implicit window when keys is None, then the
    inverse RoPE of its last channels when the tables are given, at positions pos0.. or seg's (see
    sparse_mla_fwd); naive.attend has the same signature."""
    sparse_mla_fwd(q[None], kv[None], None if keys is None else keys[None], scale, v_dim, sink=sink,
                   variant=variant, out=out[None], pos0=pos0, window=window, causal_bound=causal_bound,
                   rope_cos=rope_cos, rope_sin=rope_sin, rope_seg=seg)


def _check_rope_args(q, dim_v, pos0, cos, sin, seg, implicit=False) -> int:
    """The fused inverse RoPE's tables and the segment rows (which the implicit window reads too), checked
    before any launch; returns rot_dim (0: none)."""
    if cos is None and sin is None:
        if seg is not None and not implicit:
            raise ValueError("rope_seg gives the rows' positions for the inverse RoPE: pass rope_cos and "
                             "rope_sin with it")
        if seg is not None:
            _check_packed_rows(q, seg)
        return 0
    if cos is None or sin is None:
        raise ValueError("the inverse RoPE needs both tables: pass rope_cos and rope_sin (or neither)")
    Sq = q.shape[1]
    rot_dim = rope_kernel.check_tables(cos, sin, pos0 + Sq if seg is None else 1, q.device,
                                       "sparse_mla_fwd inverse RoPE")
    if rot_dim > dim_v:
        raise ValueError(f"the inverse RoPE rotates the output's last rot_dim = {rot_dim} channels, but "
                         f"dim_v = {dim_v}; build the tables for rot_dim <= {dim_v}")
    if seg is not None:
        _check_packed_rows(q, seg)
    return rot_dim


def _check_packed_rows(q, seg) -> None:
    if q.shape[0] != 1:
        raise ValueError(f"rope_seg (a packed batch's segment rows) needs B = 1 (the tokens packed along "
                         f"Sq), got B = {q.shape[0]}")
    varlen_kernel.check_segments(seg, q.shape[1], q.device, what="rope_seg")


def _rope_after(out, cos, sin, pos0, seg) -> None:
    """The inverse RoPE as its own pass over the output, where the kernel cannot fuse it (rope_fusable)."""
    rope_kernel.apply_rope_(out[0] if seg is not None else out, cos, sin, pos0 if seg is None else 0,
                            inverse=True, seg=seg)
