"""Compressor on Triton: gated pooling + RMSNorm + RoPE (+ Hadamard) in one streaming pass.

Computes compressed rows [row_start, row_end) of one pipeline compressor exactly as
`naive.compress` does (docs/semantics.md section 1):

    pooled  = sum_slots softmax_slots(gate + ape) * values     fp32, per channel
    y       = bf16(pooled)
    y       = bf16(norm * (y * rsqrt(mean(y^2) + eps)))         fp32 math on the bf16 row
    y[-rd:] = bf16(rope(y[-rd:], position i*m))                 fp32 cos/sin tables (rope.tables.cos_sin)
    y       = bf16(y @ Hadamard / sqrt(D))                      indexer compressor only
    y[:QN]  = quant_dequant(y[:QN], format, blocks of QB)      the official FP8 / FP4 step, if any

Design
------
One program per (block of BR compressed rows, batch element); all D channels of a row
live in the program (RMSNorm and the Hadamard need the whole row). The 2m (overlap) or
m pooling slots of a row are loaded as one [BR, SLOTS, DP] tile per tensor:
slot s < MC is token (i-1)*m + j of the previous block (channels [0, D)), slot s >= MC
token i*m + j of the row's own block (channels [D, 2D)); without overlap the m slots
are the own block's tokens (all D channels). Each input byte is read once (with
overlap a token's two channel halves feed two neighbouring rows, so still once in
total): a single streaming pass, fp32 math, only the bf16 rows are written.

Launch (launch_config): grid (cdiv(rows, BR), B), 4 warps, tiles of ~4096 elements per
input tensor: v4 attention compressor (D=512, m=4, overlap) BR=1 x 8 slots x 512 channels
(88 registers, no spills for sm_90); v4 indexer compressor (D=128, Hadamard) BR=4 x 8 x 128.
Loads are 16-byte vectors with evict-first (inputs) / evict-last (ape) hints.

When 2m * D does not fit one tile (large m or D), the slots go in chunks of MC with an
online softmax (running max / sum / accumulator, rescaled per chunk); with one chunk
(every preset) the rescale factors are exact zeros and the math is the plain two-pass
softmax in registers.

Exactness: every op the reference does in fp32 is done in fp32, in the same order where
it matters (fp32 ops are not contracted into FMAs: the launch passes
enable_fp_fusion=False, like PyTorch's separate elementwise kernels), rounding to bf16 is
round-to-nearest-even at the same three or four places. What is NOT bitwise identical is
fp32 rounding inside reductions and transcendental functions (sum order of the slot and
RMSNorm sums, exp implementation, the Hadamard as a two-stage +-1 Kronecker sum times
D^-0.5 instead of a GEMM with rounded +-D^-0.5 entries). These differ from the reference
by a few fp32 ulps, which flips a bf16 rounding on a tiny fraction of elements (1 bf16
ulp; tests/test_compressor_triton.py states the asserted bound).

The Hadamard is done in registers without a matrix input: H_D = H_A (x) H_B (Sylvester,
D = A*B), the row is viewed as [A, B] and multiplied by the +-1 sign matrices of both
factors (generated in-kernel from parity(i & j)), then scaled by D^-0.5.

bf16 rounding is done with integer bit ops (`_bits.round_bf16`), not `.to(tl.bfloat16)`:
the Triton interpreter's fp32 -> bf16 cast truncates instead of rounding to nearest even,
and the bit-op version is exactly RTNE on both the interpreter and the GPU.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .._bits import round_bf16
from .._env import kernels_interpreted, next_pow2
from ..quant.kernel import format_constexprs, kernel_limits as quant_limits, qdq_rows
from ..rope.kernel import check_tables
from ..varlen.kernel import ROW_COLS, load_row_segments, segments_arg

NEG_INF = tl.constexpr(float("-inf"))
MAX_DIM = 1024          # largest row dim the one-row-per-program kernel supports
TILE_ELEMS = 4096       # target elements of one [BR, SLOTS, DP] input tile (16 KiB fp32)
HAD_ELEMS = 8192        # cap of the Hadamard stage's broadcast product [BR, A, B, B]
MAX_BATCH = 65535       # the grid's batch axis


# ---------------------------------------------------------------------------------------
# kernel
@triton.jit
def _sign_matrix(N: tl.constexpr, LOGN: tl.constexpr):
    """Sylvester Hadamard signs [N, N] fp32: (-1)^popcount(i & j)."""
    v = tl.arange(0, N)[:, None] & tl.arange(0, N)[None, :]
    par = tl.full([N, N], 0, tl.int32)
    for s in tl.static_range(LOGN):
        par = par ^ ((v >> s) & 1)
    return (1 - 2 * par).to(tl.float32)


@triton.jit
def _pool_chunk(v_base, g_base, ape_ptr, row, base, r_ok, c0, m_run, l_run, acc,
                D: tl.constexpr, DP: tl.constexpr, M: tl.constexpr, MC: tl.constexpr,
                OVERLAP: tl.constexpr, BR: tl.constexpr):
    # slots [c0, c0 + MC) of every row's block(s): one [BR, SL, DP] tile per tensor
    if OVERLAP:
        SL: tl.constexpr = 2 * MC
        CD: tl.constexpr = 2 * D
        s = tl.arange(0, SL)
        own = s >= MC
        j = c0 + (s % MC)                               # position of the token inside its block
        blk = tl.where(own, 0, -1)                      # previous block for slots [0, MC)
        ch0 = tl.where(own, D, 0)                       # its channel half
    else:
        SL: tl.constexpr = MC
        CD: tl.constexpr = D
        s = tl.arange(0, SL)
        j = c0 + s
        blk = tl.full([SL], 0, tl.int32)
        ch0 = tl.full([SL], 0, tl.int32)
    d = tl.arange(0, DP)
    d_ok = d < D
    # row: the row's index inside its sequence; base: the sequence's first token (0 unpacked)
    tok = (row[:, None] + blk[None, :]).to(tl.int64) * M + j[None, :]          # [BR, SL] int64
    no_tok = tok < 0                                                            # block -1 of row 0
    offs = (base[:, None] + tok)[:, :, None] * CD + (ch0[None, :, None] + d[None, None, :])   # [BR, SL, DP]
    mask = (r_ok[:, None] & (tok >= 0))[:, :, None] & d_ok[None, None, :]
    # inputs stream through once (each byte feeds one row): evict first; the small ape stays cached
    v = tl.load(v_base + offs, mask=mask, other=0.0, eviction_policy="evict_first")
    g = tl.load(g_base + offs, mask=mask, other=0.0, eviction_policy="evict_first")
    a = tl.load(ape_ptr + j[:, None] * CD + ch0[:, None] + d[None, :], mask=d_ok[None, :], other=0.0,
                eviction_policy="evict_last")
    g = g + a[None, :, :]
    g = tl.where(no_tok[:, :, None], NEG_INF, g)                                 # logit -inf, value 0
    m_new = tl.maximum(m_run, tl.max(g, axis=1))
    alpha = tl.exp(m_run - m_new)                       # exactly 0 on the first chunk
    p = tl.exp(g - m_new[:, None, :])
    l_new = l_run * alpha + tl.sum(p, axis=1)
    acc_new = acc * alpha + tl.sum(p * v, axis=1)
    return m_new, l_new, acc_new


@triton.jit
def _compress_kernel(v_ptr, g_ptr, ape_ptr, norm_ptr, cos_ptr, sin_ptr, out_ptr,
                     rseg_ptr, S, row_start, n_rows, pos0, stride_ob, stride_or, eps,
                     D: tl.constexpr, DP: tl.constexpr, M: tl.constexpr, MC: tl.constexpr,
                     OVERLAP: tl.constexpr, ROPE_DIM: tl.constexpr, HAD: tl.constexpr,
                     HA: tl.constexpr, HB: tl.constexpr, LOG_HA: tl.constexpr, LOG_HB: tl.constexpr,
                     HAD_SCALE: tl.constexpr, BR: tl.constexpr, QB: tl.constexpr, QN: tl.constexpr,
                     QMAX: tl.constexpr, QEXP: tl.constexpr, QMANT: tl.constexpr, MANT: tl.constexpr,
                     MIN_EXP: tl.constexpr, AMAX_FLOOR: tl.constexpr, VARLEN: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    CD: tl.constexpr = 2 * D if OVERLAP else D
    r_loc = pid * BR + tl.arange(0, BR)                 # row within the slice
    r_ok = r_loc < n_rows
    if VARLEN:
        # a packed batch (varlen/naive.py): packed row -> its sequence's first token and its index i there;
        # a row no sequence owns is written as zeros
        tok0, row = load_row_segments(rseg_ptr, row_start + r_loc, r_ok)
        r_ok = r_ok & (row >= 0)
        base = tok0.to(tl.int64)
        # RoPE position of row i: i*m in its sequence (pos0: the tables' last row, a bound that keeps a
        # sequence longer than the plan's max_seqlen from reading outside the tables)
        rpos = tl.minimum(tl.maximum(row, 0) * M, pos0)
    else:
        row = row_start + r_loc                         # global compressed row i
        base = tl.zeros([BR], tl.int64)
        rpos = pos0 + r_loc * M
    in_off = b.to(tl.int64) * S * CD                    # 64-bit: b*S*c*D exceeds 2^31 at large S
    v_base = v_ptr + in_off
    g_base = g_ptr + in_off

    # 1. gated pooling: per-channel softmax over the slots, fp32
    m_run = tl.full([BR, DP], NEG_INF, dtype=tl.float32)
    l_run = tl.full([BR, DP], 0.0, tl.float32)
    acc = tl.full([BR, DP], 0.0, tl.float32)
    if M == MC:
        m_run, l_run, acc = _pool_chunk(v_base, g_base, ape_ptr, row, base, r_ok, 0, m_run, l_run, acc,
                                        D, DP, M, MC, OVERLAP, BR)
    else:
        for c0 in range(0, M, MC):
            m_run, l_run, acc = _pool_chunk(v_base, g_base, ape_ptr, row, base, r_ok, c0, m_run, l_run, acc,
                                            D, DP, M, MC, OVERLAP, BR)
    d = tl.arange(0, DP)
    d_ok = d < D
    y = round_bf16(tl.div_rn(acc, l_run))              # cast to the activation dtype
    y = tl.where(d_ok[None, :], y, 0.0)

    # 2. RMSNorm in fp32 on the bf16 row: weight * (x * rsqrt(mean(x^2) + eps))
    ms = tl.div_rn(tl.sum(y * y, axis=1), tl.full([BR], D, tl.float32))
    rstd = tl.div_rn(tl.full([BR], 1.0, tl.float32), tl.sqrt_rn(ms + eps))
    w = tl.load(norm_ptr + d, mask=d_ok, other=0.0)
    y = round_bf16(w[None, :] * (y * rstd[:, None]))

    # 3. RoPE on the last ROPE_DIM channels (interleaved pairs) at position i*m: table row
    #    pos0 + r_loc*M of the program's tables (pos0 = the first row's position)
    if ROPE_DIM > 0:
        HALF: tl.constexpr = ROPE_DIM // 2
        P0: tl.constexpr = (D - ROPE_DIM) // 2          # first rotated pair
        ya, yb = tl.split(tl.reshape(y, (BR, DP // 2, 2)))
        k = tl.arange(0, DP // 2)
        in_rope = (k >= P0) & (k < D // 2)
        col = tl.where(in_rope, k - P0, 0)
        tmask = r_ok[:, None] & in_rope[None, :]
        toff = rpos[:, None] * HALF + col[None, :]
        c = tl.load(cos_ptr + toff, mask=tmask, other=1.0)
        sn = tl.load(sin_ptr + toff, mask=tmask, other=0.0)
        ra = round_bf16(ya * c - yb * sn)
        rb = round_bf16(ya * sn + yb * c)
        ya = tl.where(in_rope[None, :], ra, ya)
        yb = tl.where(in_rope[None, :], rb, yb)
        y = tl.reshape(tl.join(ya, yb), (BR, DP))

    # 4. orthonormal Hadamard of the whole bf16 row: H_D = H_A (x) H_B
    if HAD:
        x3 = tl.reshape(y, (BR, HA, HB))
        hb = _sign_matrix(HB, LOG_HB)
        z = tl.sum(x3[:, :, :, None] * hb[None, None, :, :], axis=2)        # [BR, A, B]
        ha = _sign_matrix(HA, LOG_HA)
        y = tl.sum(z[:, :, None, :] * ha[None, :, :, None], axis=1)         # [BR, A, B]
        y = round_bf16(tl.reshape(y, (BR, DP)) * HAD_SCALE)

    # 5. the official quantise-dequantise step on the finished bf16 row (QB = 0: none): channels
    #    [0, QN) in blocks of QB onto the format's grid (the results are bf16 values)
    if QB > 0:
        y = qdq_rows(y, BR, DP, QB, QN, QMAX, QEXP, QMANT, MANT, MIN_EXP, AMAX_FLOOR)

    o_ptrs = out_ptr + b.to(tl.int64) * stride_ob + r_loc.to(tl.int64)[:, None] * stride_or + d[None, :]
    if VARLEN:
        y = tl.where(r_ok[:, None], y, 0.0)
        tl.store(o_ptrs, y.to(tl.bfloat16), mask=(r_loc < n_rows)[:, None] & d_ok[None, :])
    else:
        tl.store(o_ptrs, y.to(tl.bfloat16), mask=r_ok[:, None] & d_ok[None, :])


# ---------------------------------------------------------------------------------------
# configuration
def launch_config(dim: int, ratio: int, overlap: bool, hadamard: bool) -> dict:
    """Tile choice: BR rows x SLOTS x DP channels ~ TILE_ELEMS per input tensor, 4 warps.

    slot_chunk (MC): slots of one block per tile (== ratio unless 2*ratio*DP is too big:
    then the online softmax loops over ratio // MC chunks).
    """
    dp = next_pow2(dim)
    c = 2 if overlap else 1
    mc = min(ratio, max(1, TILE_ELEMS // (c * dp)))
    br = max(1, TILE_ELEMS // (c * mc * dp))
    if hadamard:
        la = (dp.bit_length() - 1) // 2
        hmax = 1 << ((dp.bit_length() - 1) - la)
        br = max(1, min(br, HAD_ELEMS // (dp * hmax)))
    br = min(br, 64)
    return {"block_rows": br, "slot_chunk": mc, "num_warps": 4}


def _hadamard_factors(dim: int):
    log = dim.bit_length() - 1
    la = log // 2
    lb = log - la
    return 1 << la, 1 << lb, la, lb


def _constexprs(dim: int, ratio: int, overlap: bool, hadamard: bool, rope_dim: int, cfg: dict,
                quant_format: Optional[str] = None, quant_block: int = 0, quant_channels: int = 0,
                varlen: bool = False) -> dict:
    dp = next_pow2(dim)
    # no quantisation: QB = 0 and any format's constants (unread)
    quant = format_constexprs(quant_format or "e4m3")
    if hadamard:
        ha, hb, la, lb = _hadamard_factors(dim)
    else:
        ha, hb, la, lb = 1, 1, 0, 0
    return dict(D=dim, DP=dp, M=ratio, MC=cfg["slot_chunk"], OVERLAP=bool(overlap), ROPE_DIM=rope_dim,
                HAD=bool(hadamard), HA=ha, HB=hb, LOG_HA=la, LOG_HB=lb,
                HAD_SCALE=float(dim) ** -0.5 if hadamard else 1.0, BR=cfg["block_rows"],
                QB=quant_block if quant_format else 0, QN=quant_channels if quant_format else 0, VARLEN=bool(varlen),
                **quant)


def check_config(cfg: Optional[dict], dim: int, ratio: int, overlap: bool, hadamard: bool) -> dict:
    full = launch_config(dim, ratio, overlap, hadamard)
    if cfg is None:
        return full
    unknown = set(cfg) - set(full)
    if unknown:
        raise ValueError(f"unknown compressor config key(s) {sorted(unknown)}; valid: {sorted(full)}")
    full.update(cfg)
    br, mc, nw = full["block_rows"], full["slot_chunk"], full["num_warps"]
    for name, v in (("block_rows", br), ("slot_chunk", mc), ("num_warps", nw)):
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"compressor config {name} = {v!r} must be a power of two >= 1")
    if mc > ratio:
        raise ValueError(f"compressor config slot_chunk = {mc} > ratio = {ratio}; use a power of two <= {ratio}")
    return full


def kernel_limits(dim: int, ratio: int, hadamard: bool) -> Optional[str]:
    """Why the Triton compressor cannot run these sizes (None when it can); checked before any launch."""
    if dim > MAX_DIM:
        return (f"compressor dim = {dim} > {MAX_DIM}: the Triton compressor keeps a whole row in one program; "
                f"use dim <= {MAX_DIM}")
    if hadamard and dim & (dim - 1):
        return f"compressor dim = {dim}: the in-register Hadamard needs a power-of-two dim"
    return None


def check_compress_inputs(values, gate, ape, norm, ratio, overlap, hadamard, row_start=0, row_end=None, out=None):
    """Validate before any launch; raise with a message that says how to fix the call. -> (B, S, T, r0, r1)."""
    for name, t in (("values", values), ("gate", gate), ("ape", ape), ("norm", norm)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if norm.dim() != 1:
        raise ValueError(f"norm must be [D], got shape {tuple(norm.shape)}")
    D, m = int(norm.shape[0]), ratio
    coff = 2 if overlap else 1
    cd = coff * D
    why = kernel_limits(D, m, hadamard)
    if why is not None:
        raise ValueError(why + " or the reference (kernels_triton.compressor.naive.compress)")
    if values.dim() != 3:
        raise ValueError(f"values must be [B, S, c*D] = [B, S, {cd}] (c = {coff} with overlap={overlap}, "
                         f"D = {D}), got shape {tuple(values.shape)}")
    B, S, width = values.shape
    if width != cd:
        raise ValueError(f"values has {width} channels per token but the compressor needs c*D = {coff}*{D} = "
                         f"{cd} (overlap={overlap}); pass the compressor's own projections")
    if tuple(gate.shape) != tuple(values.shape):
        raise ValueError(f"gate must have the shape of values {tuple(values.shape)}, got {tuple(gate.shape)}")
    if tuple(ape.shape) != (m, cd):
        raise ValueError(f"ape must be [ratio, c*D] = [{m}, {cd}], got {tuple(ape.shape)}")
    for name, t in (("values", values), ("gate", gate), ("ape", ape), ("norm", norm)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}; convert with .float()")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() on it")
    dev = values.device
    for name, t in (("gate", gate), ("ape", ape), ("norm", norm)):
        if t.device != dev:
            raise ValueError(f"{name} is on {t.device} but values is on {dev}; move all inputs to one device")
    if dev.type != "cuda" and not kernels_interpreted(_compress_kernel):
        raise ValueError(f"the Triton compressor needs CUDA tensors (got {dev}); on a CPU use "
                         f"kernels_triton.compressor.naive.compress, or set TRITON_INTERPRET=1 before importing "
                         f"kernels_triton (tests)")
    if B > MAX_BATCH:
        raise ValueError(f"batch {B} > {MAX_BATCH} (the grid's batch axis); split the batch")
    T = S // m
    if row_end is None:
        row_end = T
    for name, v in (("row_start", row_start), ("row_end", row_end)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not 0 <= row_start <= row_end <= T:
        raise ValueError(f"need 0 <= row_start <= row_end <= T = S // ratio = {S} // {m} = {T}, got "
                         f"row_start={row_start}, row_end={row_end}")
    rows = row_end - row_start
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if tuple(out.shape) != (B, rows, D):
            raise ValueError(f"out must be [B, row_end - row_start, D] = [{B}, {rows}, {D}], got "
                             f"{tuple(out.shape)}; pass e.g. buffer[:, row_start:row_end]")
        if out.dtype != torch.bfloat16:
            raise TypeError(f"out must be bfloat16, got {out.dtype}")
        if out.device != dev:
            raise ValueError(f"out is on {out.device} but the inputs are on {dev}")
        if out.stride(2) != 1:
            raise ValueError(f"out's channel axis must be contiguous (stride 1), got strides {tuple(out.stride())}")
    return B, S, T, row_start, row_end


def compress(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, norm: torch.Tensor, *, ratio: int,
             overlap: bool, hadamard: bool = False, eps: float = 1e-6, cos: Optional[torch.Tensor] = None,
             sin: Optional[torch.Tensor] = None, row_start: int = 0, row_end: Optional[int] = None,
             out: Optional[torch.Tensor] = None, position_offset: int = 0, quant_format: Optional[str] = None,
             quant_block: int = 0, quant_channels: int = 0, row_seg: Optional[torch.Tensor] = None,
             config: Optional[dict] = None) -> torch.Tensor:
    """Compressed rows [row_start, row_end) -> [B, row_end - row_start, D] bf16 (T = S // ratio rows by default).

    values, gate: [B, S, c*D] fp32 (c = 2 with overlap); ape: [ratio, c*D] fp32; norm: [D] fp32 (all
    contiguous, one CUDA device). Row i pools tokens [m*i - m, m*i + m) (overlap) or [m*i, m*i + m);
    a slice with row_start > 0 reads the previous block itself. `cos`, `sin`: the program's RoPE
    tables by position (fp32 [P, rot_dim // 2], rope.tables.fill_tables): the last rot_dim channels
    of row i are rotated at position i*m (None: no RoPE); `hadamard`: the orthonormal rotation of
    an indexer's keys. `out` (optional) is a [B, rows, D] bf16 view with a contiguous channel axis
    (any batch/row strides), e.g. a slice of the attention's concatenated KV buffer; it is
    written and returned. `config` overrides launch_config(). `position_offset` (in compressed
    rows) shifts the RoPE positions: row i is rotated at (i + position_offset) * m, for a shard of
    a longer sequence (context parallelism). `quant_format` ('e4m3', 'e2m1' or None): channels
    [0, quant_channels) of every finished row quantise-dequantised in blocks of `quant_block`
    (docs/semantics.md section 5), fused into the row's epilogue. `row_seg` (a packed batch of
    sequences, B = 1, varlen/naive.py): the [T, 2] row table; packed row r is row i of its own sequence
    (blocks never cross a sequence boundary, RoPE at i*m), rows no sequence owns are zeros.
    """
    if quant_format is not None:
        why = quant_limits(int(norm.shape[0]), quant_block, quant_channels)
        if why:
            raise ValueError(why)
    B, S, T, r0, r1 = check_compress_inputs(values, gate, ape, norm, ratio, overlap, hadamard, row_start, row_end,
                                            out)
    D = int(norm.shape[0])
    cfg = check_config(config, D, ratio, overlap, hadamard)
    rows = r1 - r0
    if out is None:
        out = torch.empty(B, rows, D, dtype=torch.bfloat16, device=values.device)
    if rows == 0 or B == 0:
        return out
    pos0 = (r0 + position_offset) * ratio
    if row_seg is not None:
        if B != 1 or r0 != 0 or position_offset:
            raise ValueError("a packed batch (row_seg) is one sequence axis: B = 1, all rows, no position_offset")
    segs = segments_arg(row_seg, rows, out, ROW_COLS, "row_seg")
    if cos is not None:
        need = 1 if row_seg is not None else (r1 - 1 + position_offset) * ratio + 1
        rd = check_tables(cos, sin, need, values.device, "compressor RoPE")
        if row_seg is not None:
            pos0 = cos.shape[0] - 1      # packed: the kernel's bound on a row's position
    else:
        rd, cos, sin = 0, norm, norm  # no RoPE: the table pointers are not read
    const = _constexprs(D, ratio, overlap, hadamard, rd, cfg, quant_format, quant_block, quant_channels,
                        varlen=row_seg is not None)
    grid = (triton.cdiv(rows, cfg["block_rows"]), B)
    _compress_kernel[grid](values, gate, ape, norm, cos, sin, out, segs,
                           S, r0, rows, pos0, out.stride(0), out.stride(1), float(eps),
                           num_warps=cfg["num_warps"], enable_fp_fusion=False, **const)
    return out
