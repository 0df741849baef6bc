"""The score walk of the indexer (64 heads x 128 dims, unpacked rows) in Gluon, on FP8 operands (V4's packed FP4
values, V3.2's e4m3 values with Indexer.fp8_mma) and on bf16 ones (the bf16 presets' raw operands; V3.2's e4m3 values
as bf16, multiplied exactly): one k32 or k16 wgmma step at a time (GLUON_OPERANDS).

It computes what kernel._score_kernel computes (the same operands, packed or raw, the same
64-key tiles, the same -inf past a query's visible rows, nothing written past the last row a block of 4 queries
sees), but writes its layouts and its warps' roles itself, which Triton's tl.dot/tl.sum/tl.store do not let it:

- the head sum. A consumer's MMA leaves [64 keys x 64 BQ (query, head)] fp32 sums of a tile in the wgmma
  layout: a thread holds 16 of a query's 64 heads for 2 keys, and the 4 lanes of a quad hold the other 48.
  Triton's tl.sum adds within the thread and then all-reduces over the quad (16 shuffles and 16 adds a thread
  at BQ = 4), so every lane ends with all 2 BQ (key, query) sums and stores them all. Here a thread first
  reduces its heads to one partial sum per (key, query, lane of the quad), then one warp-local transpose
  through shared memory (st.shared.v4 + ldmatrix, no CTA barrier) gives each lane the 4 partials of BQ / 2
  (key, query) pairs of its own: 3 adds a pair, and BQ / 2 masks, addresses and stores.
- the warps' roles (gl.warp_specialize). A CTA scores 8 queries with consumer warpgroups that share each key
  tile (WalkShape): four of 2 queries (one m64n128k32 e4m3 wgmma a K step) where the walk writes the group
  maxima, as the composed program runs it, two of 4 (m64n256k32) otherwise (gluon_walk). One producer warp
  brings the queries once and the key tiles into a ring of GLUON_STAGES slots by TMA, with mbarriers for "tile
  ready" and "slot free". The consumers' loops hold no key-tile address math and no CTA barrier (SASS, ptxas for
  sm_90a: 202 instructions a warp a tile for 2 queries, 342 for 4, 384 for the one-warpgroup cp.async walk
  before them, 484 for the Triton walk). A consumer's period is its MMA and then its epilogue, which is the
  longer; four consumers of half the work keep the tensor core busier than two.
- the selection's pass 1 (optional, `gmax`). The selection's threshold is the K-th largest of the maxima of CAP
  strided groups of a row (key row mod CAP, kernel._select_kernel). The walk visits the key tiles phase by
  phase (phase p: tiles p, p + G, p + 2G, ... with G = CAP / 64), so a thread's BQ / 2 (key, query) scores
  stay in groups 64p + r (and 64p + r + 8) through a phase: their running maxima are BQ / 2 registers, stored
  when the phase ends. The selection then reads CAP values a row instead of the whole row (gm bit for bit its
  own pass 1's).

The sums are added in the Triton walk's order (each thread's heads in register order, then the quad's partials
as its butterfly adds them), so the scores are bit for bit the Triton walk's: a packed batch, which the Triton
walk scores, still equals its sequences run alone (tests/test_indexer_gpu.py and test_varlen_gpu.py check both).
Measured on an H200: docs/performance.md, "The FP8 score walk in Gluon", "Two warpgroups, TMA and the group
maxima" and "Four consumer warpgroups".

Sizes: 64 heads and 128 dims, every preset's indexer; the packed (varlen) walks, other sizes and the interpreter
take kernel._score_kernel (kernel.score_chunk and score_chunk_fp8 pick). The bf16 walk is bit for bit the Triton
walk too (tests/test_indexer_gpu.py). Measured: docs/performance.md, "The Gluon walk on bf16 operands"."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .._bits import BF16X2_TERMS_PTX
from .cost import SCORE_TILE_KEYS, select_capacity

GLUON_HEADS = 64        # a query's 64 heads are 64 of the MMA's N columns
GLUON_DIM = 128         # the MMA's K: four k32 FP8 steps
GLUON_STAGES = 3        # key tiles in flight (H200, last chunk at 262,144: 2, 3, 4 slots alike for both shapes)
GLUON_WARPS = 4         # the default partition: consumer 0's warpgroup


class WalkShape(NamedTuple):
    """How a CTA's queries are shared out: `consumers` warpgroups of `block_queries` queries each (one
    m64n(64 * block_queries)k32 wgmma a K step), then the TMA producer (one warp, scalars only). Registers are
    handed out by warpgroup (the producer's warp rounds up to one): `maxnreg` a thread at launch, then
    setmaxnreg gives the workers (consumers 1... and the producer) `worker_regs` and the default partition
    (consumer 0) what is left."""
    consumers: int
    block_queries: int
    worker_regs: tuple
    maxnreg: int

    @property
    def worker_warps(self) -> tuple:
        return (4,) * (self.consumers - 1) + (1,)

    @property
    def queries(self) -> int:       # a CTA's
        return self.consumers * self.block_queries


# 2 x 4 queries: 3 warpgroups at 168 = 64,512 registers of the SM's 65,536; 240 a consumer (ptxas's own choice
# was 239), 24 the producer
WALK_2X4 = WalkShape(2, 4, (240, 24), 168)
# 4 x 2 queries: 5 warpgroups at 96 = 61,440; 112 for consumers 1-3, 24 the producer, 120 for consumer 0. Four
# consumers of half the epilogue each keep the tensor core busier than two (H200, the last chunk at 262,144 with
# the maxima: 1.89 ms against 2.00-2.03); without the maxima ptxas spills in the loop at 112 registers and the
# walk is no faster than 2 x 4 (1.99-2.05 against 1.92-2.01 ms), so it keeps 2 x 4 there
WALK_4X2 = WalkShape(4, 2, (112, 112, 112, 24), 96)


# t_end + 0, a 0 that ptxas cannot see through (bit 31 of the dynamic shared memory size, 0 on every GPU). At ratio 1
# the consumers' store bound t_end is a plain sum (no division), and from it ptxas keeps the walk's tile counters in
# vector registers and spills in the 4 x 2 walk's 112-register consumers (7 local loads and a store a tile; the
# loop's PTX is that of ratio 2, which does not spill). With the opaque zero it keeps them uniform as at ratio 2 and
# 4: no spill, 202 instructions a tile (FP8) and 210 (bf16). H200, V3.2's last chunk at 131,072, the same bits:
# 4 x 2 then takes 3.79 ms against 2 x 4's 3.91 (FP8) and 5.57 against 5.81 (bf16; benchmarks/results/walk-ratio1-h200/)
_ADD_OPAQUE_ZERO = tl.constexpr("{ .reg .u32 z; mov.u32 z, %dynamic_smem_size; shr.u32 z, z, 31; add.s32 $0, $1, z; }")


def gluon_walk(group_maxima: bool) -> WalkShape:
    """The shape the walk takes, with or without the selection's group maxima (docs/performance.md, "Four
    consumer warpgroups"), at every ratio (at ratio 1 since the opaque zero in the store bound: _ADD_OPAQUE_ZERO)."""
    return WALK_4X2 if group_maxima else WALK_2X4


# the MMA operands the walk takes: FP8 (V4's packed FP4 values, V3.2's with Indexer.fp8_mma; one k32 step of K)
# and bf16 (the bf16 presets' raw operands, V3.2's e4m3 values multiplied exactly; one k16 step)
GLUON_OPERANDS = {torch.float8_e4m3fn: (gl.float8e4nv, 32), torch.bfloat16: (gl.bfloat16, 16)}


def gluon_walk_fits(heads: int, dim: int, operand_dtype: torch.dtype, packed: bool) -> bool:
    """Does the Gluon walk take these scores (else kernel._score_kernel does)?"""
    return heads == GLUON_HEADS and dim == GLUON_DIM and operand_dtype in GLUON_OPERANDS and not packed


def tma_ready(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Can the walk's TMA read these operands: contiguous queries, key rows of contiguous channels 16-byte aligned?"""
    return (q.is_contiguous() and k.stride(1) == 1 and (k.stride(0) * k.element_size()) % 16 == 0
            and k.data_ptr() % 16 == 0 and q.data_ptr() % 16 == 0)


def group_maxima_fit(heads: int, dim: int, operand_dtype: torch.dtype, packed: bool, topk: int) -> bool:
    """Can the Gluon walk also write the selection's group maxima (CAP strided groups, whole key tiles a phase)?"""
    return gluon_walk_fits(heads, dim, operand_dtype, packed) and select_capacity(topk) % SCORE_TILE_KEYS == 0


def layouts(walk: WalkShape, operand_dtype: torch.dtype = torch.float8_e4m3fn):
    """The shared-memory layouts of a consumer's [BQ * 64, 128] queries and a key tile's [64, 128] blocks of the
    operand dtype (TMA's too)."""
    dt = GLUON_OPERANDS[operand_dtype][0]
    return (gl.NVMMASharedLayout.get_default_for([walk.block_queries * GLUON_HEADS, GLUON_DIM], dt),
            gl.NVMMASharedLayout.get_default_for([SCORE_TILE_KEYS, GLUON_DIM], dt))


@gluon.constexpr_function
def _quad_bases(BQ):
    # a warp's [16 keys, BQ queries] (key, query) pairs over the 2 lane bits of a quad and the register: the
    # queries first (BQ = 4: both lane bits; BQ = 2: the first), then key rows r and r + 8 of the wgmma layout
    # (the second lane bit for BQ = 2, else a register); lanes 2-4 and the warps pick the keys as in the wgmma layout
    assert BQ in (2, 4), BQ
    if BQ == 4:
        return [[8, 0]], [[0, 1], [0, 2]]
    return [], [[0, 1], [8, 0]]


@gluon.constexpr_function
def _quad_partials_layout(BT, BQ):
    # [BT keys, BQ queries, 4 partials]: one (key, query)'s 4 partials in one thread
    regs, quad = _quad_bases(BQ)
    return gl.DistributedLinearLayout(reg_bases=[r + [0] for r in regs] + [[0, 0, 1], [0, 0, 2]],
                                      lane_bases=[q + [0] for q in quad] + [[1, 0, 0], [2, 0, 0], [4, 0, 0]],
                                      warp_bases=[[16, 0, 0], [32, 0, 0]], block_bases=[], shape=[BT, BQ, 4])


@gluon.constexpr_function
def _scores_layout(BT, BQ):
    # [BT keys, BQ queries], each element in one thread only (the quad's lanes hold different queries)
    regs, quad = _quad_bases(BQ)
    return gl.DistributedLinearLayout(reg_bases=regs, lane_bases=quad + [[1, 0], [2, 0], [4, 0]],
                                      warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[BT, BQ])


@gluon.jit
def _walk_next(p, m, n_tiles, G: gl.constexpr):
    # the tile after p + G * m in the phase order (phase p: tiles p, p + G, p + 2G, ... < n_tiles); G = 1 is the
    # plain order
    m = m + 1
    wrap = p + G * m >= n_tiles
    return gl.where(wrap, p + 1, p), gl.where(wrap, 0, m)


@gluon.jit
def _key_loader(q_desc, k_desc, q_smem, k_ring, q_bar, ready, free, q0, n_tiles, HI: gl.constexpr,
                BQ: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr, G: gl.constexpr, NC: gl.constexpr):
    # the producer warp: every consumer's (query, head) rows once (rows past the chunk read as zeros), then the key
    # tiles in the consumers' order
    mbarrier.expect(q_bar, NC * q_desc.block_type.nbytes)
    for c in gl.static_range(NC):
        tma.async_copy_global_to_shared(q_desc, [(q0 + c * BQ) * HI, 0], q_bar, q_smem.index(c))
    p = 0
    m = 0
    for j in range(n_tiles):
        s = j % STAGES
        # slot s is free once every consumer's MMA of tile j - STAGES is done (a fresh barrier passes phase 1)
        mbarrier.wait(free.index(s), ((j // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [(p + G * m) * BT, 0], ready.index(s), k_ring.index(s))
        p, m = _walk_next(p, m, n_tiles, G)


@gluon.jit
def _score_consumer(qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c, s_first, n_q,
                    T, n_tiles, stride_ws, stride_os, stride_gs, RATIO: gl.constexpr, HI: gl.constexpr,
                    BQ: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr, G: gl.constexpr, SQ: gl.constexpr,
                    ROUND: gl.constexpr, SCALED: gl.constexpr, MMA_K: gl.constexpr, WHICH: gl.constexpr):
    # one consumer warpgroup: queries q0c + WHICH * BQ ... + BQ - 1 against every key tile of the CTA; ROUND: the
    # official code's bf16 score (kernel._score_kernel's ROUND, the same bits); SCALED: packed operands, a scale
    # a (query, head) and a key row (else raw bf16 operands); MMA_K: the wgmma's K step (32 FP8, 16 bf16)
    N: gl.constexpr = BQ * HI
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, MMA_K])
    quad_l: gl.constexpr = _quad_partials_layout(BT, BQ)
    out_l: gl.constexpr = _scores_layout(BT, BQ)
    q0 = q0c + WHICH * BQ
    # head weight times the query's scale (ReLU(x * s) * w = ReLU(x) * (w * s), s a power of two > 0), in the
    # accumulator's column layout; padding queries: weight 0
    offs_w = gl.arange(0, N, layout=gl.SliceLayout(0, mma))
    qrow_w = q0 + offs_w // HI
    ok_w = qrow_w < n_q
    w = gl.load(w_ptr + qrow_w.to(gl.int64) * stride_ws + offs_w % HI, mask=ok_w, other=0.0)
    if ROUND:   # the weights as the official code's bf16 values (one cast a weight)
        w = w.to(gl.bfloat16).to(gl.float32)
    if SCALED:
        w = w * gl.load(qs_ptr + qrow_w.to(gl.int64) * HI + offs_w % HI, mask=ok_w, other=1.0)
    if ROUND:   # the bf16 products' operand (exact: a bf16 value times a power of two)
        w_b = w.to(gl.bfloat16)

    offs_q = gl.arange(0, BQ, layout=gl.SliceLayout(0, out_l))
    q_ok = q0 + offs_q < n_q
    nvis = gl.where(q_ok, (s_first + q0 + offs_q + 1) // RATIO, 0)    # rows query i sees
    out_rows = out_ptr + (q0 + offs_q).to(gl.int64)[None, :] * stride_os
    gm_rows = gm_ptr + (q0 + offs_q).to(gl.int64)[None, :] * stride_gs
    # the rows the last query of this warpgroup's block of SQ queries sees (kernel.visible_tiles): nothing is written
    # past them (the CTA's tiles go on to its last query, at most one tile further)
    t_end = (s_first + gl.minimum((q0 // SQ + 1) * SQ, n_q)) // RATIO
    if RATIO == 1:
        t_end = gl.inline_asm_elementwise(_ADD_OPAQUE_ZERO, "=r,r", [t_end], dtype=gl.int32, is_pure=True, pack=1)
    offs_to = gl.arange(0, BT, layout=gl.SliceLayout(1, out_l))
    q_b = q_smem.index(WHICH)
    mbarrier.wait(q_bar, 0)
    acc = gl.zeros([BT, N], gl.float32, layout=mma)
    gmax = gl.full([BT, BQ], float("nan"), gl.float32, layout=out_l)
    p = 0
    m = 0
    for j in range(n_tiles):
        s = j % STAGES
        mbarrier.wait(ready.index(s), (j // STAGES) & 1)
        acc = warpgroup_mma(k_ring.index(s), q_b.permute((1, 0)), acc, use_acc=False, is_async=True)
        t_o = (p + G * m) * BT + offs_to
        if SCALED:
            k_scale = gl.load(ks_ptr + t_o, mask=t_o < T, other=0.0)    # issued before the wait: hidden by the MMA
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(free.index(s), count=1)
        if ROUND:   # bf16(ReLU(bf16(dot)) * w), two terms at a time in bf16x2 arithmetic (_bits)
            x = gl.inline_asm_elementwise(BF16X2_TERMS_PTX, "=r,=r,r,r,r", [acc, w_b[None, :]], dtype=gl.float32,
                                          is_pure=True, pack=2)
        else:
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
        if ROUND:   # the head sum (one value a thread here: the cast, once a (key, query) against 64 terms)
            sc = sc.to(gl.bfloat16).to(gl.float32)
        if SCALED:
            sc = sc * k_scale[:, None]              # exact: a power of two (NaN for a non-finite key)
        vis = t_o[:, None] < nvis[None, :]
        gl.store(out_rows + t_o[:, None], gl.where(vis, sc, float("-inf")),
                 mask=(t_o < t_end)[:, None] & q_ok[None, :])
        if G > 1:
            # the running maxima of groups 64p + r: max.f32 drops NaN, so the invisible rows (NaN here) do not
            # count and a group of NaN scores stays NaN (kernel._max_nan_last, the selection's own pass 1)
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
def _score_gluon(q_desc, qs_ptr, w_ptr, k_desc, ks_ptr, out_ptr, gm_ptr, s_first, n_q, T,
                 stride_ws, stride_os, stride_gs,
                 RATIO: gl.constexpr, HI: gl.constexpr, DI: gl.constexpr, BQ: gl.constexpr, BT: gl.constexpr,
                 STAGES: gl.constexpr, G: gl.constexpr, SQ: gl.constexpr, NC: gl.constexpr,
                 WORKER_WARPS: gl.constexpr, WORKER_REGS: gl.constexpr, ROUND: gl.constexpr,
                 SCALED: gl.constexpr, MMA_K: gl.constexpr):
    q0c = gl.program_id(0) * (NC * BQ)
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [NC, BQ * HI, DI], q_desc.layout)
    k_ring = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BT, DI], k_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(free.index(i), count=NC)     # one arrival from each consumer
    # every consumer walks the tiles the CTA's last query sees (kernel.visible_tiles), each storing up to its own
    n_tiles = gl.cdiv((s_first + gl.minimum(q0c + NC * BQ, n_q)) // RATIO, BT)
    # (Gluon takes no tuple arithmetic here, so each consumer's arguments are written out, its index last)
    if NC == 2:
        gl.warp_specialize([
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 0)),
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 1)),
            (_key_loader, (q_desc, k_desc, q_smem, k_ring, q_bar, ready, free, q0c, n_tiles, HI, BQ, BT, STAGES, G,
                           NC)),
        ], WORKER_WARPS, WORKER_REGS)
    else:
        gl.static_assert(NC == 4, "2 or 4 consumer warpgroups")
        gl.warp_specialize([
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 0)),
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 1)),
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 2)),
            (_score_consumer, (qs_ptr, w_ptr, ks_ptr, out_ptr, gm_ptr, q_smem, k_ring, q_bar, ready, free, q0c,
                               s_first, n_q, T, n_tiles, stride_ws, stride_os, stride_gs, RATIO, HI, BQ, BT, STAGES,
                               G, SQ, ROUND, SCALED, MMA_K, 3)),
            (_key_loader, (q_desc, k_desc, q_smem, k_ring, q_bar, ready, free, q0c, n_tiles, HI, BQ, BT, STAGES, G,
                           NC)),
        ], WORKER_WARPS, WORKER_REGS)


def score_chunk_gluon(q8: torch.Tensor, q_scale: Optional[torch.Tensor], w: torch.Tensor, k8: torch.Tensor,
                      k_scale: Optional[torch.Tensor], out: torch.Tensor, *, s_first: int, ratio: int,
                          store_queries: int, gmax: Optional[torch.Tensor] = None,
                          walk: Optional[WalkShape] = None, round_bf16: bool = False) -> None:
    """kernel.score_chunk_fp8 (the packed operands and their scales) and kernel.score_chunk (raw bf16 operands:
    q_scale and k_scale None) on unpacked rows where gluon_walk_fits (the caller checks the operands and `gmax`);
    `gmax` [n, CAP] fp32 (CAP a multiple of 64): also the selection's group maxima of every row
    (kernel.select_chunk). `store_queries`: the Triton walk's query block (kernel.score_block_queries); a consumer
    writes -inf up to the rows the last query of its block sees, as that walk does, so both write the same cells.
    `walk`: a shape other than gluon_walk's (benchmarks compare them). `round_bf16`: the official code's bf16 score
    (kernel.score_chunk)."""
    n = q8.shape[0]
    walk = walk or gluon_walk(gmax is not None)
    BQ, BT = walk.block_queries, SCORE_TILE_KEYS
    if store_queries % BQ or walk.queries % store_queries:
        raise ValueError(f"a block of {store_queries} queries must be whole consumers' ({BQ}) in a CTA's "
                         f"{walk.queries}")
    if not tma_ready(q8, k8):
        raise ValueError("the Gluon walk's TMA needs contiguous queries and 16-byte aligned key rows "
                         f"(quant.kernel.pack_rows writes them so); got k8 strides {k8.stride()}")
    q_l, k_l = layouts(walk, k8.dtype)
    q_desc = TensorDescriptor.from_tensor(q8.view(n * GLUON_HEADS, GLUON_DIM), [BQ * GLUON_HEADS, GLUON_DIM], q_l)
    k_desc = TensorDescriptor.from_tensor(k8, [BT, GLUON_DIM], k_l)
    scaled = q_scale is not None
    _score_gluon[(triton.cdiv(n, walk.queries),)](
        q_desc, q_scale if scaled else w, w, k_desc, k_scale if scaled else w, out, out if gmax is None else gmax,
        s_first, n, k8.shape[0],
        w.stride(0), out.stride(0), 0 if gmax is None else gmax.stride(0), RATIO=ratio, HI=GLUON_HEADS,
        DI=GLUON_DIM, BQ=BQ, BT=BT, STAGES=GLUON_STAGES, G=1 if gmax is None else gmax.shape[1] // BT,
        SQ=store_queries, NC=walk.consumers, WORKER_WARPS=walk.worker_warps, WORKER_REGS=walk.worker_regs,
        ROUND=round_bf16, SCALED=scaled, MMA_K=GLUON_OPERANDS[k8.dtype][1], num_warps=GLUON_WARPS,
        maxnreg=walk.maxnreg)
