"""The quantisation steps of the official V4 / V3.2 inference code (docs/semantics.md section 5): the
PyTorch reference against a plain float64 implementation of the section, the Triton kernels (interpreter)
against the reference bit for bit, the compressor's fused step, the FP8 score kernel, and the spec."""
import dataclasses
import math
import re

import pytest
import torch

import csa_dsl
from csa_dsl import Quant, SpecError
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as inaive
from kernels_triton.quant import naive
from pipeline.metrics import tie_aware_recall

# ---------------------------------------------------------------------------------------
# a plain implementation of section 5, float64, written from the text alone
QMAX = {"e4m3": 448.0, "e2m1": 6.0}
FLOOR = {"e4m3": 1e-4, "e2m1": 6.0 * 2.0 ** -126}


def grid(fmt):
    """The non-negative values of a format, in code order (so an even code is an even mantissa)."""
    if fmt == "e2m1":
        return torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)
    codes = torch.arange(0, 127, dtype=torch.uint8)          # 0x00..0x7e: every finite non-negative e4m3
    return codes.view(torch.float8_e4m3fn).double()


def round_nearest_even(y, fmt):
    g = grid(fmt)
    a = y.abs().double().reshape(-1, 1)
    d = (a - g[None, :]).abs()
    best = d.min(dim=1, keepdim=True).values
    cand = d == best                                          # one value, or two on a tie
    code = torch.where(cand, torch.arange(len(g))[None, :], 10 ** 6)
    even = torch.where(cand & (torch.arange(len(g)) % 2 == 0)[None, :], torch.arange(len(g))[None, :], 10 ** 6)
    pick = torch.where(cand.sum(1) > 1, even.min(1).values, code.min(1).values)
    return (torch.sign(y.double().reshape(-1)) * g[pick]).reshape(y.shape)


def plain_qdq(x, fmt, block, channels=None):
    x = x.double()
    n = x.shape[-1] if channels is None else channels
    out = x.clone()
    blocks = x[..., :n].reshape(-1, block)
    res = torch.empty_like(blocks)
    for i, blk in enumerate(blocks):
        if not torch.isfinite(blk).all():
            res[i] = float("nan")
            continue
        amax = max(blk.abs().max().item(), FLOOR[fmt])
        scale = 2.0 ** math.ceil(math.log2(amax / QMAX[fmt]))
        res[i] = round_nearest_even(blk / scale, fmt).clamp(-QMAX[fmt], QMAX[fmt]) * scale
    out[..., :n] = res.reshape(*x.shape[:-1], n)
    return out


def same(a, b):
    """Bit-equal as bf16 values, NaN payloads aside (signed zeros count)."""
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    both_nan = a.isnan() & b.isnan()
    return bool(((a.view(torch.int16) == b.view(torch.int16)) | both_nan).all())


def hard_rows(D, seed):
    """bf16 rows that exercise every rule: magnitudes 1e-30..1e4, zero blocks, blocks under the amax floor,
    exact ties between grid values, amax exactly qmax * 2^k and one ulp above, negatives, NaN and inf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(24, D, generator=g) * torch.logspace(-30, 4, 24)[:, None]
    x[0] = 0.0
    x[1, :D // 2] = 1e-6                                      # under the FP8 floor
    x[2] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25] * (D // 8))   # FP4 ties (scale 1)
    x[2, 0] = 6.0
    x[3, :] = 1.0
    x[3, 0] = 448.0 * 4                                       # amax = qmax * 2^k exactly
    x[4, :] = 1.0
    x[4, 0] = torch.tensor(448.0 * 4).bfloat16().float().nextafter(torch.tensor(1e9))
    x[5] = -x[5].abs()
    x[6, 3] = float("nan")
    x[7, D - 1] = float("inf")
    return x.to(torch.bfloat16)


def wide_rows(D, block, seed):
    """bf16 rows whose blocks lie decades apart (1e-38..1e38, zero blocks among them): a packed row's small
    blocks then sit far below its e4m3 scale, down to and past the bottom of fp32's exponents."""
    g = torch.Generator().manual_seed(seed)
    nb = D // block
    mag = 10.0 ** (torch.rand(16, nb, 1, generator=g) * 76 - 38)
    x = torch.randn(16, nb, block, generator=g) * mag
    x[0, 0] = 1e38
    x[0, 1:] = 1e-38
    x[1, ::2] = 0.0
    x[2, -1] = -1e-30
    x[3, -1, 0] = 3.0e38                                      # FP4's step rounds it up to 2^128: the row is not finite
    return x.reshape(16, D).to(torch.bfloat16)


def same_packing(x, k8, ks, r8, rs):
    """Rows x packed alike: the scales (NaN where a row is not finite), and the values bit for bit (signed zeros
    count) in every row but those whose quantisation step overflows (finite x, NaN scale): there the kernel
    zeroes the whole overflowing block and the reference only its overflowing values, and no score reads them."""
    keep = ~(torch.isfinite(x).all(-1) & rs.isnan())
    return (torch.equal(ks.nan_to_num(-1.0), rs.nan_to_num(-1.0))
            and torch.equal(k8.float()[keep].view(torch.int32), r8.float()[keep].view(torch.int32)))


@pytest.mark.parametrize("fmt,block,channels", [("e2m1", 32, 128), ("e4m3", 64, 448), ("e4m3", 128, 128),
                                                ("e2m1", 8, 16)])
def test_reference_quantiser_is_section_5(fmt, block, channels):
    D = 512 if channels == 448 else max(channels, 128)
    x = hard_rows(D, seed=block)
    got = naive.quant_dequant(x, fmt, block, channels)
    exp = plain_qdq(x, fmt, block, channels)
    assert same(got, exp)
    assert got.dtype == torch.bfloat16 and torch.equal(got[:, channels:], x[:, channels:])
    # the steps are idempotent: the model's keys go through it twice (compressor, then packing)
    assert same(naive.quant_dequant(got, fmt, block, channels), got)
    # a block with a NaN or an infinity is all NaN, the other blocks of the row are not touched by it
    assert got[6, :block].isnan().all() and not got[6, block:channels].isnan().any()


@pytest.mark.interpret
@pytest.mark.parametrize("fmt,block,channels,D", [("e2m1", 32, 128, 128), ("e4m3", 64, 448, 512),
                                                  ("e4m3", 128, 128, 128), ("e4m3", 16, 32, 48)])
def test_kernels_match_reference_bitwise(fmt, block, channels, D):
    from kernels_triton.quant import kernel
    x = hard_rows(D, seed=D)[None]
    out = torch.full_like(x, float("nan"))
    kernel.quant_rows(x, out, fmt=fmt, block=block, channels=channels)
    assert same(out, naive.quant_dequant(x, fmt, block, channels))
    # a strided destination (the attention's gather table) and a batch of 2
    big = torch.zeros(2, 40, D, dtype=torch.bfloat16)
    x2 = torch.cat([x, x.flip(1)])
    kernel.quant_rows(x2, big[:, 3:27], fmt=fmt, block=block, channels=channels)
    assert same(big[:, 3:27], naive.quant_dequant(x2, fmt, block, channels)) and (big[:, :3] == 0).all()
    if channels == D:
        for wide, rows in ((False, x[0]), (True, wide_rows(D, block, seed=D))):
            k8 = torch.empty(rows.shape, dtype=kernel.packed_dtype(fmt))
            ks = torch.empty(rows.shape[:-1])
            kernel.pack_rows(rows.contiguous(), k8, ks, fmt=fmt, block=block)
            r8 = torch.empty(rows.shape, dtype=torch.float8_e4m3fn)
            rs = torch.empty(rows.shape[:-1])
            naive.pack_rows(rows, r8, rs, fmt=fmt, block=block)
            assert same_packing(rows, k8, ks, r8, rs)
            # the NaN and inf rows; the row whose FP4 step overflows (3.0e38 = 3.53 * 2^126 rounds to 4 * 2^126 =
            # 2^128; on the e4m3 grid it rounds to 224 * 2^120 and stays finite)
            assert rs[3].isnan() == (fmt == "e2m1") if wide else rs[6:8].isnan().all()


def test_fp8_packing_is_exact_on_grid_values_and_bounded_otherwise():
    x = naive.quant_dequant(hard_rows(128, seed=3), "e2m1", 32)
    x8, s = naive.fp8_rows(x)
    ok = torch.isfinite(s)
    assert (s[ok] == torch.exp2(torch.log2(s[ok]).round())).all()          # powers of two
    deq = naive.dequant_rows(x8, s)
    # FP4 values of one row whose block scales span at most 2^12 fit e4m3 at the row's scale exactly
    amax = x.float().abs().amax(-1)
    span_ok = ok & (x.float().abs().masked_fill(x.float() == 0, float("inf")).amin(-1) >= amax * 2.0 ** -12)
    assert torch.equal(deq[span_ok], x.float()[span_ok])
    # everything else within the stated bound: |error| <= 2^-10 * scale
    err = (deq[ok] - x.float()[ok]).abs()
    assert (err <= 2.0 ** -10 * s[ok][:, None]).all()
    assert deq[~ok].isnan().any(dim=-1).all() if (~ok).any() else True


@pytest.mark.interpret
def test_compressor_fuses_exactly_the_step():
    """The compressor's fused step is the quantiser applied to the kernel's own finished rows (bit for bit),
    and the reference compressor does the same with its rows."""
    from kernels_triton.compressor import kernel as ck
    from kernels_triton.compressor import naive as cn
    from kernels_triton.rope.tables import Rotary, cos_sin
    g = torch.Generator().manual_seed(4)
    for D, had, fmt, block, ch in ((512, False, "e4m3", 64, 448), (128, True, "e2m1", 32, 128)):
        B, S, m = 2, 40, 4
        v, gt = torch.randn(B, S, 2 * D, generator=g), torch.randn(B, S, 2 * D, generator=g)
        ape, nrm = torch.randn(m, 2 * D, generator=g), torch.rand(D, generator=g) + 0.5
        cos, sin = cos_sin(Rotary(64, 160000.0, 16.0, 65536, 32.0, 1.0), torch.arange(S))
        kw = dict(ratio=m, overlap=True, hadamard=had, cos=cos, sin=sin)
        q = dict(quant_format=fmt, quant_block=block, quant_channels=ch)
        for impl in (ck, cn):
            plain = impl.compress(v, gt, ape, nrm, **kw)
            fused = impl.compress(v, gt, ape, nrm, **kw, **q)
            assert same(fused, naive.quant_dequant(plain, fmt, block, ch))
            assert not torch.equal(fused, plain)


def _score_inputs(n, HI, DI, T, seed):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(n, HI, DI, generator=g) * torch.logspace(-3, 1, HI)[None, :, None]).bfloat16()
    w = torch.rand(n, HI, generator=g)
    k = torch.randn(T, DI, generator=g).bfloat16()
    return q, w, k


@pytest.mark.interpret
@pytest.mark.parametrize("fmt,block,m", [("e2m1", 32, 4), ("e4m3", 128, 1)])
def test_fp8_score_kernel_against_dequantised_reference(fmt, block, m):
    from kernels_triton.quant import kernel as qk
    n, HI, DI, s0 = 48, 16, 128, 200
    T = (s0 + n) // m
    q, w, k = _score_inputs(n, HI, DI, T, seed=block)
    k8 = torch.empty(T, DI, dtype=qk.packed_dtype(fmt))
    ks = torch.empty(T)
    qk.pack_rows(k, k8, ks, fmt=fmt, block=block)
    q8, qs = torch.empty(q.shape, dtype=k8.dtype), torch.empty(n, HI)
    qk.pack_rows(q, q8, qs, fmt=fmt, block=block)          # the queries: one scale per (query, head)
    ld = icost.score_ld(T)
    got = torch.full((n, ld), float("nan"))
    ikernel.score_chunk_fp8(q8, qs, w, k8, ks, got, s_first=s0, ratio=m)
    # the exact scores of the quantised operands, in float64
    qd = naive.quant_dequant(q, fmt, block).double()
    kd = naive.quant_dequant(k, fmt, block).double()
    exact = (torch.einsum("nhd,td->nht", qd, kd).relu() * w.double()[..., None]).sum(1)
    exact = inaive.mask_invisible(exact, torch.arange(s0, s0 + n), m)
    vis = torch.isfinite(exact)
    sc = got[:, :T]
    assert not sc[vis].isnan().any() and not sc[vis].isinf().any()       # every visible score written
    assert (sc[~vis & ~sc.isnan()] == float("-inf")).all()             # invisible ones in its tiles: -inf
    err = (got[:, :T][vis].double() - exact[vis]).abs().max() / exact[vis].abs().max()
    assert err < 1e-6, err
    # the top-k of the kernel's scores is the exact top-k of the quantised operands (ties count)
    sel = torch.empty(n, 24, dtype=torch.int32)
    inaive.select_chunk(got, sel, s_first=s0, ratio=m, k_eff=24, topk=24)
    recall, det = tie_aware_recall(sel, exact.float(), 24, rel_tol=2.0 ** -20)
    assert recall == 1.0 and det["duplicates"] == 0, det


@pytest.mark.interpret
def test_indexer_topk_with_quantisation_matches_reference():
    g = torch.Generator().manual_seed(8)
    B, S, HI, DI, m, K = 1, 160, 8, 64, 4, 12
    q = torch.randn(B, S, HI, DI, generator=g).bfloat16()
    w = torch.rand(B, S, HI, generator=g)
    k = torch.randn(B, S // m, DI, generator=g).bfloat16()
    quant = Quant("e2m1", 32)
    got = csa_dsl.indexer_topk(q, w, k, K, m, backend="triton", chunk=64, quant=quant)
    exp = csa_dsl.indexer_topk(q, w, k, K, m, backend="torch", quant=quant)
    plain = csa_dsl.indexer_topk(q, w, k, K, m, backend="torch")
    exact = inaive.mask_invisible(inaive.indexer_scores(naive.quant_dequant(q, "e2m1", 32),
                                                       w, naive.quant_dequant(k, "e2m1", 32))[0], torch.arange(S), m)
    for ids in (got[0], exp[0]):
        recall, det = tie_aware_recall(ids, exact, K, rel_tol=2.0 ** -20)
        assert recall == 1.0 and det["duplicates"] == 0, det
    assert not torch.equal(exp.sort(-1).values, plain.sort(-1).values)     # the step changes the selection


# ---------------------------------------------------------------------------------------
# the spec
def test_presets_quantise_as_the_models_do():
    for name in ("v4-flash", "v4-pro", "v4-flash-hca", "v4-window", "v4-flash-selfindex"):
        a = csa_dsl.preset(name).attention
        assert a.kv_quant == Quant("e4m3", 64) and a.kv_quant_channels == 448
    for name in ("v4-flash", "v4-pro"):
        assert csa_dsl.preset(name).indexer.quant == Quant("e2m1", 32)
    assert csa_dsl.preset("v3.2").indexer.quant == Quant("e4m3", 128)
    assert csa_dsl.preset("v3.2").attention.kv_quant is None
    for name in ("v4-flash-bf16", "v4-pro-bf16", "v3.2-bf16"):
        p = csa_dsl.preset(name)
        assert p.attention.kv_quant is None and p.indexer.quant is None
        base = csa_dsl.preset(name[:-5])
        assert p.replace(name=base.name) == base.replace(attention=p.attention, indexer=p.indexer)
    p = csa_dsl.preset("v4-flash")
    assert csa_dsl.Pipeline.from_json(p.to_json()) == p
    assert "E2M1 in blocks of 32" in str(p) and "first 448 channels quantised E4M3" in str(p)


def test_quant_spec_errors():
    with pytest.raises(SpecError, match="format"):
        Quant("e5m2", 64)
    with pytest.raises(SpecError, match="power of two"):
        Quant("e4m3", 48)
    with pytest.raises(SpecError, match="does not divide"):
        csa_dsl.Indexer(heads=4, dim=48, quant=Quant("e2m1", 32))
    with pytest.raises(SpecError, match="does not divide"):
        csa_dsl.SparseAttention(heads=4, qk_dim=512, v_dim=512, kv_quant=Quant("e4m3", 128))
    with pytest.raises(SpecError, match="one dim"):
        p = csa_dsl.preset("v4-flash")
        p.replace(compressor=p.compressor.__class__(ratio=4, dim=512, rope=csa_dsl.RoPE(dim=32)))


def test_v32_fp8_mma_option():
    """Indexer.fp8_mma: V3.2's e4m3 operands packed as FP8 and scored by the Gluon walk, as the IR shows; refused,
    saying why, where it means nothing; the default V3.2 program keeps bf16 operands (the Gluon walk on bf16, both
    with the selection's group maxima). On the CPU every path computes the exact scores, fp8_mma or not."""
    from pipeline.composer import compose
    from kernels_triton.indexer import ir as indexer_ir
    from kernels_triton.quant import ir as quant_ir
    v32 = csa_dsl.preset("v3.2")
    fp8 = v32.replace(indexer=dataclasses.replace(v32.indexer, fp8_mma=True))
    assert csa_dsl.Pipeline.from_json(fp8.to_json()) == fp8 and "FP8 tensor cores" in str(fp8)
    for spec, dtype in ((v32, torch.bfloat16), (fp8, torch.float8_e4m3fn)):
        prog = compose(spec, 1, 131072, 2048, "cuda")
        assert prog.buffers["q8"].dtype == prog.buffers["k8"].dtype == dtype and "gmax" in prog.buffers
    assert indexer_ir.compile_ir("score_fp8", q_format="e4m3", fp8_mma=True, ratio=1, topk=2048,
                                 group_maxima=True)["ttir"].startswith("// Gluon")
    assert "!tt.ptr<f8E4M3FN>" in quant_ir.compile_ir("pack", "e4m3", 128, 128, 128, fp8_mma=True)["ttir"]
    assert "!tt.ptr<f8E4M3FN>" not in quant_ir.compile_ir("pack", "e4m3", 128, 128, 128)["ttir"]
    for ix, why in ((csa_dsl.preset("v4-flash").indexer, "FP4 operands multiply on FP8 tensor cores anyway"),
                    (csa_dsl.preset("v3.2-bf16").indexer, "bf16 operands")):
        with pytest.raises(SpecError, match=why):
            dataclasses.replace(ix, fp8_mma=True)
    g = torch.Generator().manual_seed(3)
    q, w, k = torch.randn(1, 96, 8, 128, generator=g).bfloat16(), torch.rand(1, 96, 8, generator=g), \
        torch.randn(1, 96, 128, generator=g).bfloat16()
    quant = Quant("e4m3", 128)
    assert torch.equal(csa_dsl.indexer_topk(q, w, k, 16, 1, quant=quant, fp8_mma=True),
                       csa_dsl.indexer_topk(q, w, k, 16, 1, quant=quant))
    with pytest.raises(SpecError, match="fp8_mma is for e4m3"):
        csa_dsl.indexer_topk(q, w, k, 16, 1, fp8_mma=True)


def test_fp8_pack_literals_are_the_e4m3_format():
    """kernel._pack_kernel spells the e4m3 grid and the packing floor as literals (the interpreter cannot mix
    constexpr globals into tensor arithmetic): they must stay those of formats.E4M3."""
    from kernels_triton.quant.formats import E4M3, PACK_AMAX_FLOOR
    assert (E4M3.qmax_exp, E4M3.qmax_mant_bits, E4M3.mant, E4M3.min_exp) == (8, 0x600000, 3, -6)
    assert PACK_AMAX_FLOOR == 2.0 ** -118


def test_pack_kernel_compiled():
    """The packing of V4's index queries (FP4 step, then e4m3 values and a scale a row) compiled for sm_90a, no GPU:
    one-warp programs of 2,048 elements with 16-byte loads, no spill, and at most 16 SASS instructions an element
    (984 for 64 a thread; the two-pass form before it took 33: docs/performance.md, "The query packing's
    instructions")."""
    from kernels_triton.quant import ir, kernel
    from ptxas_report import assembled, ptxas_usage
    ptx = ir.compile_ir("pack", fmt="e2m1", block=32, dim=128, channels=128)["ptx"]
    regs, spills = ptxas_usage(ptx)
    sass = [ln for ln in assembled(ptx)[1] if re.match(r"\s+/\*[0-9a-f]+\*/\s+\S", ln)]
    per_thread = kernel.PACK_ELEMS // (32 * kernel.PACK_WARPS)
    assert spills == 0 and regs <= 128, (regs, spills)
    assert sum("LDG.E.128" in ln for ln in sass) == per_thread // 8        # 8 bf16 a load
    assert len(sass) <= 16 * per_thread, len(sass)
