"""The official code's bf16 index score on the GPU (`Indexer.score_rounding = "bf16"`): the score kernels against
the reference and the official formula at S = 32,768, and the selection's recall (test_score_rounding.py has the
CPU side)."""
import pytest
import torch

import csa_dsl
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as inaive
from kernels_triton.quant import kernel as qkernel
from kernels_triton.quant.naive import quant_dequant
from pipeline.metrics import tie_aware_recall
from test_score_rounding import official_scores

pytestmark = pytest.mark.gpu


def _ulp(x):
    return torch.ldexp(torch.ones_like(x), torch.frexp(x)[1] - 8)


@pytest.mark.parametrize("fmt", [None, "e2m1", "e4m3"])
def test_bf16_score_kernel_on_the_gpu(fmt, fresh_seed):
    """The last 1,024 queries at S = 32,768 (v4-flash's 64 x 128 operands; v3.2's e4m3 packing on its m = 1),
    NaN-poisoned: every visible score written and a bf16 value, -inf past the visible rows; against the
    reference on the same operands: the same bits but where a fp32 sum rounds differently for its order, there
    within an ulp of the score and of the row's largest (at most 1 in 1,000 scores). On v4-flash's operands the
    Gluon walk ran: the Triton walk gives the same cells and bits, and so does the walk with the group maxima,
    which are those of its scores."""
    S, n, HI, DI = 32768, 1024, 64, 128
    m = 1 if fmt == "e4m3" else 4
    s0, T = S - n, S // m
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    q = torch.randn(n, HI, DI, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, HI, device="cuda", generator=g) * (HI * DI) ** -0.5
    k = torch.randn(T, DI, device="cuda", generator=g).bfloat16()
    ld = icost.score_ld(T)
    got, exp = (torch.full((n, ld), float("nan"), device="cuda") for _ in range(2))
    if fmt is None:
        ikernel.score_chunk(q, w, k, got, s_first=s0, ratio=m, round_bf16=True)
        inaive.score_chunk(q, w, k, exp, s_first=s0, ratio=m, round_bf16=True)
    else:
        block = 32 if fmt == "e2m1" else 128
        k8 = torch.empty(T, DI, dtype=qkernel.packed_dtype(fmt), device="cuda")
        ks = torch.empty(T, device="cuda")
        qkernel.pack_rows(k, k8, ks, fmt=fmt, block=block)
        q8, qs = torch.empty(q.shape, dtype=k8.dtype, device="cuda"), torch.empty(n, HI, device="cuda")
        qkernel.pack_rows(q, q8, qs, fmt=fmt, block=block)
        ikernel.score_chunk_fp8(q8, qs, w, k8, ks, got, s_first=s0, ratio=m, round_bf16=True)
        inaive.score_chunk_fp8(q8, qs, w, k8, ks, exp, s_first=s0, ratio=m, round_bf16=True)
    nvis = inaive.visible_rows(torch.arange(s0, s0 + n, device="cuda"), m)
    vis = torch.arange(T, device="cuda")[None, :] < nvis[:, None]
    a, b = got[:, :T], exp[:, :T]
    assert not a[vis].isnan().any() and (a[~vis & ~a.isnan()] == float("-inf")).all(), fresh_seed
    assert torch.equal(a[vis], a[vis].bfloat16().float())
    same = (a[vis].view(torch.int32) == b[vis].view(torch.int32)).float().mean()
    row_max = torch.where(vis, b.abs(), 0).amax(1, keepdim=True).expand_as(b)[vis]
    bound = _ulp(b[vis].abs()) + _ulp(row_max)
    assert same >= 0.999 and ((a[vis] - b[vis]).abs() <= bound).all(), (float(same), fresh_seed)
    if fmt == "e2m1":   # v4-flash's: the Gluon walk ran; the Triton walk writes the same cells and bits
        tri = torch.full_like(got, float("nan"))
        ikernel.score_chunk_fp8(q8, qs, w, k8, ks, tri, s_first=s0, ratio=m, round_bf16=True, walk="triton")
        assert torch.equal(tri.isnan(), got.isnan()), fresh_seed
        assert torch.equal(tri[~tri.isnan()].view(torch.int32), got[~got.isnan()].view(torch.int32)), fresh_seed
        # and with the selection's group maxima: the same scores, the maxima of them
        cap = icost.select_capacity(512)
        gm, again = torch.full((n, cap), float("nan"), device="cuda"), torch.full_like(got, float("nan"))
        ikernel.score_chunk_fp8(q8, qs, w, k8, ks, again, s_first=s0, ratio=m, round_bf16=True, gmax=gm)
        assert torch.equal(again.view(torch.int32), got.view(torch.int32)), fresh_seed
        exp_gm = inaive.group_maxima(got, s0, m, cap)
        assert torch.equal(gm.nan_to_num(), exp_gm.nan_to_num()), fresh_seed


def test_bf16_score_selection_on_the_gpu(fresh_seed):
    """indexer_topk with the bf16 score at S = 32,768 (v4-flash's sizes and steps): recall 1.0 against the
    official formula's scores of the quantised operands (torch's bf16 einsum and head sum), ties within one bf16
    ulp of the row's largest (the two add their fp32 sums in different orders)."""
    spec = csa_dsl.preset("v4-flash")
    ix, m, S = spec.indexer, spec.ratio, 32768
    T = S // m
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    q = torch.randn(1, S, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(1, S, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(1, T, ix.dim, device="cuda", generator=g).bfloat16()
    got = csa_dsl.indexer_topk(q, w, k, ix.topk, m, quant=ix.quant, score_rounding="bf16")
    qd, kd = (quant_dequant(x, ix.quant.format, ix.quant.block) for x in (q, k))
    for s0 in (0, 4096, S // 2, S - 512):
        s1 = s0 + 512
        off = inaive.mask_invisible(official_scores(qd[:, s0:s1], w[:, s0:s1], kd)[0],
                                    torch.arange(s0, s1, device="cuda"), m)
        rec, det = tie_aware_recall(got[0, s0:s1], off, ix.topk, rel_tol=2.0 ** -7)
        assert rec == 1.0 and det["duplicates"] == 0 and det["wrong_padding_rows"] == 0, (det, fresh_seed)
