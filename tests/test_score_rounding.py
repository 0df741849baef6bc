"""The official code's bf16 index score (`Indexer.score_rounding = "bf16"`, docs/semantics.md): the reference
against the official formula as PyTorch computes it in bf16, the Triton score kernels (interpreter) against the
reference bit for bit, the selection against the official scores, the composed program, the spec and the IR."""
import dataclasses

import pytest
import torch

import csa_dsl
from csa_dsl import Quant, Schedule, SpecError
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import ir as indexer_ir
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as inaive
from kernels_triton.quant import kernel as qkernel
from kernels_triton.quant import naive as qnaive
from pipeline.composer import compose, walk_calls
from pipeline.metrics import tie_aware_recall
from ptxas_report import assembled, ptxas_usage, sass_loops
from test_reference import small_family


def official_scores(q, w, k):
    """The index score as the official inference code computes it, on bf16 tensors: the per-head dots as a bf16
    einsum (fp32 accumulation, one rounding), ReLU, times the bf16 head weights (a bf16 product), the head sum
    of bf16 values (fp32 accumulation, one rounding). [B, S, T] as fp32."""
    logits = torch.einsum("bshd,btd->bsht", q.bfloat16(), k.bfloat16())
    return (logits.relu_() * w.bfloat16().unsqueeze(-1)).sum(dim=2).float()


def _inputs(B, S, HI, DI, T, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, HI, DI, generator=g).bfloat16()
    w = torch.randn(B, S, HI, generator=g) * 0.1      # signed weights, as a trained model's
    k = torch.randn(B, T, DI, generator=g).bfloat16()
    return q, w, k


def test_reference_is_the_official_formula():
    """naive.indexer_scores(round_bf16=True) against the official formula: the same bits but where the two fp32
    sums (a head's dot, the head sum) round differently for their different orders, and there one bf16 ulp."""
    q, w, k = _inputs(1, 64, 64, 128, 512, seed=3)
    ours = inaive.indexer_scores(q, w, k, round_bf16=True)
    off = official_scores(q, w, k)
    same = ours.view(torch.int32) == off.view(torch.int32)
    assert same.float().mean() > 0.999, same.float().mean()
    ulp = torch.ldexp(torch.ones_like(ours), torch.frexp(ours)[1] - 8)
    assert ((ours - off).abs() <= ulp).all()
    assert torch.equal(ours, ours.bfloat16().float())                 # every score is a bf16 value
    plain = inaive.indexer_scores(q, w, k)
    assert (plain != ours).float().mean() > 0.9                       # the fp32 score is not


@pytest.mark.interpret
@pytest.mark.parametrize("fmt", [None, "e2m1", "e4m3"])
def test_score_kernels_round_as_the_reference(fmt):
    """The Triton score kernel with ROUND (bf16 operands, and the packed operands of each quantisation) against
    the reference bit for bit on every visible score; a NaN query scores NaN; invisible columns in its tiles
    -inf."""
    n, HI, DI, s0, m = 48, 16, 128, 200, 4
    T = (s0 + n) // m
    q, w, k = _inputs(1, n, HI, DI, T, seed=7)
    q, w, k = q[0], w[0], k[0]
    q[5, 3, 7] = float("nan")
    ld = icost.score_ld(T)
    got, exp = torch.full((n, ld), float("nan")), torch.full((n, ld), float("nan"))
    if fmt is None:
        ikernel.score_chunk(q, w, k, got, s_first=s0, ratio=m, round_bf16=True)
        inaive.score_chunk(q, w, k, exp, s_first=s0, ratio=m, round_bf16=True)
    else:
        block = 32 if fmt == "e2m1" else 128
        k8, ks = torch.empty(T, DI, dtype=qkernel.packed_dtype(fmt)), torch.empty(T)
        qkernel.pack_rows(k, k8, ks, fmt=fmt, block=block)
        q8, qs = torch.empty(q.shape, dtype=k8.dtype), torch.empty(n, HI)
        qkernel.pack_rows(q, q8, qs, fmt=fmt, block=block)
        ikernel.score_chunk_fp8(q8, qs, w, k8, ks, got, s_first=s0, ratio=m, round_bf16=True)
        inaive.score_chunk_fp8(q8, qs, w, k8, ks, exp, s_first=s0, ratio=m, round_bf16=True)
    vis = inaive.visible(T, torch.zeros(n, dtype=torch.long), inaive.visible_rows(torch.arange(s0, s0 + n), m))
    a, b = got[:, :T], exp[:, :T]
    num = vis & ~b.isnan()
    assert torch.equal(a[num].view(torch.int32), b[num].view(torch.int32))     # signed zeros count
    assert torch.equal(a.isnan() & vis, b.isnan() & vis) and b[5][vis[5]].isnan().all() and num.sum() > 1000
    assert (a[~vis & ~a.isnan()] == float("-inf")).all()
    assert torch.equal(a[vis & ~a.isnan()], a[vis & ~a.isnan()].bfloat16().float())
    # the fp32 score of the same operands is another (the mode reaches the kernel)
    plain = torch.full((n, ld), float("nan"))
    if fmt is None:
        ikernel.score_chunk(q, w, k, plain, s_first=s0, ratio=m)
    else:
        ikernel.score_chunk_fp8(q8, qs, w, k8, ks, plain, s_first=s0, ratio=m)
    assert not torch.equal(plain[:, :T][vis & ~a.isnan()], a[vis & ~a.isnan()])


@pytest.mark.parametrize("quant", [None, Quant("e2m1", 32)])
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_selection_is_the_official_ranking(quant, backend):
    """indexer_topk with the bf16 score picks, for every query, rows whose official score is at least the
    official K-th (tie-aware recall 1.0 with no tolerance); with the fp32 score some queries do not."""
    B, S, HI, DI, m, K = 1, 256, 16, 64, 4, 16
    q, w, k = _inputs(B, S, HI, DI, S // m, seed=8)
    deq = (lambda x: x) if quant is None else (lambda x: qnaive.quant_dequant(x, quant.format, quant.block))
    off = inaive.mask_invisible(official_scores(deq(q), w, deq(k))[0], torch.arange(S), m)
    recall = {}
    for mode in ("bf16", "fp32"):
        ids = csa_dsl.indexer_topk(q, w, k, K, m, backend=backend, chunk=64, quant=quant, score_rounding=mode)[0]
        recall[mode], det = tie_aware_recall(ids, off, K, rel_tol=0.0)
        assert det["duplicates"] == 0 and det["wrong_padding_rows"] == 0 and det["invisible_picks"] == 0, det
    assert recall["bf16"] == 1.0 and recall["fp32"] < 1.0, recall


@pytest.mark.interpret
def test_composed_program_runs_the_bf16_score():
    """The composed program's score calls carry the mode, and the Triton kernels (interpreter) select what the
    reference path selects (test_reference and test_composer compare both with the dense oracle)."""
    tiny = small_family("v4-flash-bf16-scores")
    inp = csa_dsl.random_inputs(tiny, 1, 90, "cpu", seed=5)
    fwd = csa_dsl.compile(tiny, "cpu", Schedule(path="composed", query_chunk=32), backend="interpret")
    out, idx = fwd(**inp, return_indices=True)
    ref_out, ref_idx = csa_dsl.compile(tiny, "cpu")(**inp, return_indices=True)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)
    plain = tiny.replace(indexer=dataclasses.replace(tiny.indexer, score_rounding="fp32"))
    scores = [c for c in walk_calls(fwd.plan(90).body) if c.op.startswith("indexer.score")]
    assert scores and all(c.args.get("round_bf16") is True for c in scores)
    plain_scores = [c for c in walk_calls(csa_dsl.compile(plain, "cpu").plan(90).body)
                    if c.op.startswith("indexer.score")]
    assert plain_scores and all("round_bf16" not in c.args for c in plain_scores)


def test_spec_program_and_ir():
    spec = csa_dsl.preset("v4-flash")
    ix = dataclasses.replace(spec.indexer, score_rounding="bf16")
    p = spec.replace(indexer=ix)
    assert csa_dsl.Pipeline.from_json(p.to_json()) == p and p != spec
    assert "scores rounded to bf16" in str(p) and "rounded to bf16" not in str(spec)
    with pytest.raises(SpecError, match="score_rounding must be one of"):
        dataclasses.replace(spec.indexer, score_rounding="fp16")
    q, w, k = _inputs(1, 8, 2, 16, 2, seed=1)
    with pytest.raises(SpecError, match="score_rounding must be one of"):
        csa_dsl.indexer_topk(q, w, k, 2, 4, score_rounding="fp16")
    # the bf16 score runs on both walks, the Gluon one still writing the selection's group maxima
    prog = compose(p, 1, 65536, 1024, "cuda")
    assert "gmax" in prog.buffers and "round_bf16=True" in str(prog)
    assert "round_bf16" not in str(compose(spec, 1, 65536, 1024, "cuda"))
    # the IR shown is the kernel that runs: the Gluon walk (64 x 128, FP8 and bf16 operands, with and without the
    # maxima) and _score_kernel (other sizes), each rounding its terms two at a time in bf16x2 arithmetic
    # (F2F, one value on the conversion unit, had made the score three times slower; the Gluon walk keeps one a
    # head sum, one (key, query) a thread there, against 32 terms a thread), no spill
    variants = [("score_fp8", {}, True), ("score_fp8", {"group_maxima": True}, True),
                ("score_fp8", {"heads": 32}, False), ("score", {}, True), ("score", {"heads": 32}, False)]
    for kind, kw, gluon in variants:
        levels = indexer_ir.compile_ir(kind, round_bf16=True, **kw)
        assert levels["ttir"].startswith("// Gluon") == gluon and "cvt.rn.bf16x2.f32" in levels["ptx"]
        assert ptxas_usage(levels["ptx"])[1] == 0
        loop = max(sass_loops(assembled(levels["ptx"])[1]), key=len)
        assert loop.count("HMUL2") >= 32 and 16 * loop.count("F2F") <= loop.count("F2FP"), (kind, kw, loop)
        assert "cvt.rn.bf16" not in indexer_ir.compile_ir(kind, **kw)["ptx"]
