"""Compressor on Triton: gated pooling + RMSNorm + RoPE (+ Hadamard) in one streaming pass.

Computes compressed rows [row_start, row_end) of one pipeline compressor exactly as
`pipeline.reference.compress` does (docs/csa-semantics.md section 1):

    pooled  = sum_slots softmax_slots(gate + ape) * values     fp32, per channel
    y       = bf16(pooled)
    y       = bf16(norm * (y * rsqrt(mean(y^2) + eps)))         fp32 math on the bf16 row
    y[-rd:] = bf16(rope(y[-rd:], position i*m))                 fp32 cos/sin tables (csa_dsl.rope.cos_sin)
    y       = bf16(y @ Hadamard / sqrt(D))                      indexer compressor only

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

bf16 rounding is done with integer bit ops (`_round_bf16`), not `.to(tl.bfloat16)`:
the Triton interpreter's fp32 -> bf16 cast truncates instead of rounding to nearest even,
and the bit-op version is exactly RTNE on both the interpreter and the GPU.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from csa_dsl.rope import cos_sin
from csa_dsl.spec import Compressor

NEG_INF = tl.constexpr(float("-inf"))
MAX_DIM = 1024          # largest row dim the one-row-per-program kernel supports
TILE_ELEMS = 4096       # target elements of one [BR, SLOTS, DP] input tile (16 KiB fp32)
HAD_ELEMS = 8192        # cap of the Hadamard stage's broadcast product [BR, A, B, B]


def interpreting() -> bool:
    """TRITON_INTERPRET is set now (kernels defined from now on are interpreted)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def compile_ir_elsewhere(module: str, kwargs: dict) -> dict:
    """Run `module`.compile_ir(**kwargs) in a fresh Python process with the interpreter off.

    Under TRITON_INTERPRET=1 (set before import) every @triton.jit function, including
    triton.language's own tl.sum / tl.max / tl.zeros, is an InterpretedFunction that
    triton.compile cannot take; a child process without the variable compiles normally.
    """
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = (f"import json, sys; from {module} import compile_ir; "
            f"json.dump(compile_ir(**json.loads(sys.argv[1])), sys.stdout)")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                       env=env, cwd=root)
    if r.returncode != 0:
        raise RuntimeError(f"compiling {module} in a child process failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout)


def _kernels_interpreted(kernel) -> bool:
    """Was `kernel` defined under TRITON_INTERPRET=1 (Triton decides when the @jit decorator runs)?"""
    return not isinstance(kernel, JITFunction)


# ---------------------------------------------------------------------------------------
# kernel
@triton.jit
def _round_bf16(x):
    """fp32 -> the nearest bf16 value (ties to even), kept as fp32 (exactly representable)."""
    b = x.to(tl.int32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
    return tl.where(x != x, x, b.to(tl.float32, bitcast=True))    # NaN stays NaN


@triton.jit
def _sign_matrix(N: tl.constexpr, LOGN: tl.constexpr):
    """Sylvester Hadamard signs [N, N] fp32: (-1)^popcount(i & j)."""
    v = tl.arange(0, N)[:, None] & tl.arange(0, N)[None, :]
    par = tl.full([N, N], 0, tl.int32)
    for s in tl.static_range(LOGN):
        par = par ^ ((v >> s) & 1)
    return (1 - 2 * par).to(tl.float32)


@triton.jit
def _pool_chunk(v_base, g_base, ape_ptr, row, r_ok, c0, m_run, l_run, acc,
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
    tok = (row[:, None] + blk[None, :]).to(tl.int64) * M + j[None, :]          # [BR, SL] int64
    no_tok = tok < 0                                                            # block -1 of row 0
    offs = tok[:, :, None] * CD + (ch0[None, :, None] + d[None, None, :])      # [BR, SL, DP] int64
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
                     S, row_start, n_rows, stride_ob, stride_or, eps,
                     D: tl.constexpr, DP: tl.constexpr, M: tl.constexpr, MC: tl.constexpr,
                     OVERLAP: tl.constexpr, ROPE_DIM: tl.constexpr, HAD: tl.constexpr,
                     HA: tl.constexpr, HB: tl.constexpr, LOG_HA: tl.constexpr, LOG_HB: tl.constexpr,
                     HAD_SCALE: tl.constexpr, BR: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    CD: tl.constexpr = 2 * D if OVERLAP else D
    r_loc = pid * BR + tl.arange(0, BR)                 # row within the slice
    r_ok = r_loc < n_rows
    row = row_start + r_loc                             # global compressed row i
    in_off = b.to(tl.int64) * S * CD                    # 64-bit: b*S*c*D exceeds 2^31 at large S
    v_base = v_ptr + in_off
    g_base = g_ptr + in_off

    # 1. gated pooling: per-channel softmax over the slots, fp32
    m_run = tl.full([BR, DP], NEG_INF, dtype=tl.float32)
    l_run = tl.full([BR, DP], 0.0, tl.float32)
    acc = tl.full([BR, DP], 0.0, tl.float32)
    if M == MC:
        m_run, l_run, acc = _pool_chunk(v_base, g_base, ape_ptr, row, r_ok, 0, m_run, l_run, acc,
                                        D, DP, M, MC, OVERLAP, BR)
    else:
        for c0 in range(0, M, MC):
            m_run, l_run, acc = _pool_chunk(v_base, g_base, ape_ptr, row, r_ok, c0, m_run, l_run, acc,
                                            D, DP, M, MC, OVERLAP, BR)
    d = tl.arange(0, DP)
    d_ok = d < D
    y = _round_bf16(tl.div_rn(acc, l_run))              # cast to the activation dtype
    y = tl.where(d_ok[None, :], y, 0.0)

    # 2. RMSNorm in fp32 on the bf16 row: weight * (x * rsqrt(mean(x^2) + eps))
    ms = tl.div_rn(tl.sum(y * y, axis=1), tl.full([BR], D, tl.float32))
    rstd = tl.div_rn(tl.full([BR], 1.0, tl.float32), tl.sqrt_rn(ms + eps))
    w = tl.load(norm_ptr + d, mask=d_ok, other=0.0)
    y = _round_bf16(w[None, :] * (y * rstd[:, None]))

    # 3. RoPE on the last ROPE_DIM channels (interleaved pairs) at position i*m
    if ROPE_DIM > 0:
        HALF: tl.constexpr = ROPE_DIM // 2
        P0: tl.constexpr = (D - ROPE_DIM) // 2          # first rotated pair
        ya, yb = tl.split(tl.reshape(y, (BR, DP // 2, 2)))
        k = tl.arange(0, DP // 2)
        in_rope = (k >= P0) & (k < D // 2)
        col = tl.where(in_rope, k - P0, 0)
        tmask = r_ok[:, None] & in_rope[None, :]
        toff = r_loc[:, None] * HALF + col[None, :]
        c = tl.load(cos_ptr + toff, mask=tmask, other=1.0)
        sn = tl.load(sin_ptr + toff, mask=tmask, other=0.0)
        ra = _round_bf16(ya * c - yb * sn)
        rb = _round_bf16(ya * sn + yb * c)
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
        y = _round_bf16(tl.reshape(y, (BR, DP)) * HAD_SCALE)

    o_ptrs = out_ptr + b.to(tl.int64) * stride_ob + r_loc.to(tl.int64)[:, None] * stride_or + d[None, :]
    tl.store(o_ptrs, y.to(tl.bfloat16), mask=r_ok[:, None] & d_ok[None, :])


# ---------------------------------------------------------------------------------------
# configuration
def launch_config(dim: int, ratio: int, overlap: bool, hadamard: bool) -> dict:
    """Tile choice: BR rows x SLOTS x DP channels ~ TILE_ELEMS per input tensor, 4 warps.

    slot_chunk (MC): slots of one block per tile (== ratio unless 2*ratio*DP is too big:
    then the online softmax loops over ratio // MC chunks).
    """
    dp = _next_pow2(dim)
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


def _constexprs(c: Compressor, cfg: dict) -> dict:
    dp = _next_pow2(c.dim)
    if c.hadamard:
        ha, hb, la, lb = _hadamard_factors(c.dim)
    else:
        ha, hb, la, lb = 1, 1, 0, 0
    return dict(D=c.dim, DP=dp, M=c.ratio, MC=cfg["slot_chunk"], OVERLAP=bool(c.overlap),
                ROPE_DIM=(c.rope.dim if c.rope is not None else 0), HAD=bool(c.hadamard),
                HA=ha, HB=hb, LOG_HA=la, LOG_HB=lb, HAD_SCALE=float(c.dim) ** -0.5 if c.hadamard else 1.0,
                BR=cfg["block_rows"])


def _check_config(cfg: dict, c: Compressor) -> dict:
    full = launch_config(c.dim, c.ratio, c.overlap, c.hadamard)
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
    if mc > c.ratio:
        raise ValueError(f"compressor config slot_chunk = {mc} > ratio = {c.ratio}; use a power of two <= {c.ratio}")
    return full


# ---------------------------------------------------------------------------------------
# wrapper
_TABLES: "OrderedDict[tuple, tuple]" = OrderedDict()
_TABLES_MAX = 8


def rope_tables(rope, first: int, end: int, step: int, device) -> tuple:
    """fp32 cos/sin [end - first, rope.dim // 2] at positions arange(first, end) * step, built
    with csa_dsl.rope.cos_sin on `device` (bitwise the reference's tables); the last few are
    cached so repeated launches do not rebuild them."""
    key = (rope, int(first), int(end), int(step), str(torch.device(device)))
    hit = _TABLES.get(key)
    if hit is not None:
        _TABLES.move_to_end(key)
        return hit
    pos = torch.arange(first, end, device=device) * step
    tabs = tuple(t.contiguous() for t in cos_sin(rope, pos))
    _TABLES[key] = tabs
    while len(_TABLES) > _TABLES_MAX:
        _TABLES.popitem(last=False)
    return tabs


def check_compress_inputs(values, gate, ape, norm, spec, row_start=0, row_end=None, out=None):
    """Validate before any launch; raise with a message that says how to fix the call. -> (B, S, T, r0, r1)."""
    if not isinstance(spec, Compressor):
        raise TypeError(f"spec must be a csa_dsl.spec.Compressor, got {type(spec).__name__}")
    for name, t in (("values", values), ("gate", gate), ("ape", ape), ("norm", norm)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    D, m, cd = spec.dim, spec.ratio, spec.coff * spec.dim
    if D > MAX_DIM:
        raise ValueError(f"Compressor.dim = {D} > {MAX_DIM}: the Triton compressor keeps a whole row in one "
                         f"program; use dim <= {MAX_DIM} or the reference (pipeline.reference.compress)")
    if values.dim() != 3:
        raise ValueError(f"values must be [B, S, c*D] = [B, S, {cd}] (c = {spec.coff} with overlap={spec.overlap}, "
                         f"D = {D}), got shape {tuple(values.shape)}")
    B, S, width = values.shape
    if width != cd:
        raise ValueError(f"values has {width} channels per token but the compressor needs c*D = {spec.coff}*{D} = "
                         f"{cd} (overlap={spec.overlap}); pass the compressor's own projections")
    if tuple(gate.shape) != tuple(values.shape):
        raise ValueError(f"gate must have the shape of values {tuple(values.shape)}, got {tuple(gate.shape)}")
    if tuple(ape.shape) != (m, cd):
        raise ValueError(f"ape must be [ratio, c*D] = [{m}, {cd}], got {tuple(ape.shape)}")
    if tuple(norm.shape) != (D,):
        raise ValueError(f"norm must be [D] = [{D}], got {tuple(norm.shape)}")
    for name, t in (("values", values), ("gate", gate), ("ape", ape), ("norm", norm)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}; convert with .float()")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() on it")
    dev = values.device
    for name, t in (("gate", gate), ("ape", ape), ("norm", norm)):
        if t.device != dev:
            raise ValueError(f"{name} is on {t.device} but values is on {dev}; move all inputs to one device")
    if dev.type != "cuda" and not _kernels_interpreted(_compress_kernel):
        raise ValueError(f"the Triton compressor needs CUDA tensors (got {dev}); on a CPU use "
                         f"pipeline.reference.compress, or set TRITON_INTERPRET=1 before importing "
                         f"kernels_triton (tests)")
    if B > 65535:
        raise ValueError(f"batch {B} > 65535 (the grid's batch axis); split the batch")
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


def compress(values: torch.Tensor, gate: torch.Tensor, ape: torch.Tensor, norm: torch.Tensor, spec: Compressor,
             row_start: int = 0, row_end: Optional[int] = None, out: Optional[torch.Tensor] = None,
             config: Optional[dict] = None, position_offset: int = 0) -> torch.Tensor:
    """Compressed rows [row_start, row_end) -> [B, row_end - row_start, D] bf16 (T = S // m rows by default).

    values, gate: [B, S, c*D] fp32; ape: [m, c*D] fp32; norm: [D] fp32 (all contiguous, one CUDA
    device). Row i pools tokens [m*i - m, m*i + m) (overlap) or [m*i, m*i + m); a slice with
    row_start > 0 reads the previous block itself. `out` (optional) is a [B, rows, D] bf16 view
    with a contiguous channel axis (any batch/row strides), e.g. a slice of the attention's
    concatenated KV buffer; it is written and returned. `config` overrides launch_config().
    `position_offset` (in compressed rows) shifts the RoPE positions: row i is rotated at
    (i + position_offset) * m, for a shard of a longer sequence (context parallelism).
    """
    B, S, T, r0, r1 = check_compress_inputs(values, gate, ape, norm, spec, row_start, row_end, out)
    cfg = _check_config(config, spec)
    rows = r1 - r0
    if out is None:
        out = torch.empty(B, rows, spec.dim, dtype=torch.bfloat16, device=values.device)
    if rows == 0 or B == 0:
        return out
    if spec.rope is not None:
        cos, sin = rope_tables(spec.rope, r0 + position_offset, r1 + position_offset, spec.ratio, values.device)
    else:
        cos = sin = norm  # unused
    const = _constexprs(spec, cfg)
    grid = (triton.cdiv(rows, cfg["block_rows"]), B)
    _compress_kernel[grid](values, gate, ape, norm, cos, sin, out,
                           S, r0, rows, out.stride(0), out.stride(1), float(spec.norm_eps),
                           num_warps=cfg["num_warps"], enable_fp_fusion=False, **const)
    return out


def compress_bytes(B: int, S: int, spec: Compressor) -> int:
    """Bytes the kernel moves for all T rows: both fp32 inputs once, bf16 rows out."""
    T = S // spec.ratio
    return 2 * B * T * spec.ratio * spec.coff * spec.dim * 4 + B * T * spec.dim * 2


# ---------------------------------------------------------------------------------------
# IR without a GPU
_IR_CACHE: dict = {}


def compile_ir(dim: int = 512, ratio: int = 4, overlap: bool = True, hadamard: bool = False, rope_dim: int = 64,
               arch: int = 90, config: Optional[dict] = None) -> dict:
    """Compile the compressor kernel for GPUTarget('cuda', arch, 32) on any machine: {ttir, ttgir, llir, ptx}.

    Compiled once per process and argument set (the cached dict is returned; do not mutate it).
    """
    import json

    key = (dim, ratio, overlap, hadamard, rope_dim, arch, json.dumps(config, sort_keys=True))
    if key not in _IR_CACHE:
        _IR_CACHE[key] = _compile_ir(dim, ratio, overlap, hadamard, rope_dim, arch, config)
    return _IR_CACHE[key]


def _compile_ir(dim: int, ratio: int, overlap: bool, hadamard: bool, rope_dim: int, arch: int,
                config: Optional[dict]) -> dict:
    if _kernels_interpreted(_compress_kernel):
        return compile_ir_elsewhere("kernels_triton.compressor", dict(dim=dim, ratio=ratio, overlap=overlap,
                                                                      hadamard=hadamard, rope_dim=rope_dim,
                                                                      arch=arch, config=config))
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from csa_dsl.spec import RoPE

    spec = Compressor(ratio=ratio, dim=dim, overlap=overlap, hadamard=hadamard,
                      rope=RoPE(dim=rope_dim) if rope_dim else None)
    cfg = _check_config(config, spec)
    const = _constexprs(spec, cfg)
    sig = {"v_ptr": "*fp32", "g_ptr": "*fp32", "ape_ptr": "*fp32", "norm_ptr": "*fp32", "cos_ptr": "*fp32",
           "sin_ptr": "*fp32", "out_ptr": "*bf16", "S": "i32", "row_start": "i32", "n_rows": "i32",
           "stride_ob": "i64", "stride_or": "i32", "eps": "fp32"}
    sig.update({k: "constexpr" for k in const})
    # what a launch at preset sizes specializes: 16-byte aligned pointers, S and strides % 16 == 0
    kernel = _compress_kernel
    names = kernel.arg_names
    div16 = ("v_ptr", "g_ptr", "ape_ptr", "norm_ptr", "cos_ptr", "sin_ptr", "out_ptr", "S", "stride_ob", "stride_or")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16}
    src = ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": cfg["num_warps"], "enable_fp_fusion": False})
    return {lvl: compiled.asm[lvl] for lvl in ("ttir", "ttgir", "llir", "ptx") if lvl in compiled.asm}
