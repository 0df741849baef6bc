"""Triton indexer on the GPU (bf16): tie-aware recall 1.0 against an exact fp32 top-k."""
import pytest
import torch

import csa_dsl
from kernels_triton.indexer import naive as ref
from kernels_triton.quant.naive import quant_dequant
from pipeline.metrics import tie_aware_recall

pytestmark = pytest.mark.gpu


def _exact_scores(q, w, k, s0, s1, m):
    pos = torch.arange(s0, s1, device=q.device)
    sc = ref.indexer_scores(q[:, s0:s1], w[:, s0:s1], k)[0]     # fp32 einsum (no TF32: torch default)
    return ref.mask_invisible(sc, pos, m)


@pytest.mark.parametrize("name", ["v4-flash", "v4-pro", "v3.2", "v4-flash-bf16", "v3.2-bf16"])
@pytest.mark.parametrize("S", [4096, 32768])
def test_recall_vs_exact_fp32(name, S, fresh_seed):
    """bf16 presets: the bf16 score kernel; model presets: the quantisation step on idx_q and idx_k and
    the FP8 score kernel, against the exact fp32 scores of the quantised operands."""
    assert not torch.backends.cuda.matmul.allow_tf32
    spec = csa_dsl.preset(name)
    ix, m = spec.indexer, spec.ratio
    T = S // m
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)   # fresh inputs every run, seed reported
    q = torch.randn(1, S, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(1, S, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(1, T, ix.dim, device="cuda", generator=g).bfloat16()
    got = csa_dsl.indexer_topk(q, w, k, ix.topk, m, quant=ix.quant)
    if ix.quant is not None:       # the exact scores below are those of the quantised operands
        q, k = quant_dequant(q, ix.quant.format, ix.quant.block), quant_dequant(k, ix.quant.format, ix.quant.block)
    k_eff = min(ix.topk, T)
    assert got.shape == (1, S, k_eff) and got.dtype == torch.int32
    worst, strict = 1.0, 1.0
    # check a spread of row blocks (all of them at S = 4096)
    starts = range(0, S, 512) if S <= 4096 else [0, 512, S // 2, S - 1024, S - 512]
    for s0 in starts:
        s1 = min(S, s0 + 512)
        exact = _exact_scores(q, w, k, s0, s1, m)
        rec, det = tie_aware_recall(got[0, s0:s1], exact, k_eff)
        assert det["duplicates"] == 0 and det["wrong_padding_rows"] == 0 and det["invisible_picks"] == 0, det
        worst, strict = min(worst, rec), min(strict, det["strict_recall"])
    assert worst == 1.0, (worst, strict)
    # early rows are padded: query s sees (s+1)//m rows
    for s in (0, m - 1, m, 3 * m + 1):
        nvis = (s + 1) // m
        assert int((got[0, s] >= 0).sum()) == min(nvis, k_eff)


def test_long_sequence_1m_completes():
    """S = 1,048,576 (idx_q alone is 8.6e9 elements: 64-bit addressing) completes with sane values."""
    spec = csa_dsl.preset("v4-flash")
    ix, m = spec.indexer, spec.ratio
    S = 1 << 20
    T = S // m
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs ~20 GiB of GPU memory")
    q = torch.randn(1, S, ix.heads, ix.dim, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1, S, ix.heads, device="cuda") * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(1, T, ix.dim, device="cuda", dtype=torch.bfloat16)
    got = csa_dsl.indexer_topk(q, w, k, ix.topk, m, quant=ix.quant)
    # the exact scores below are those of the quantised operands (only the rows they need: q is 17 GiB)
    q = quant_dequant(q[:, -256:], ix.quant.format, ix.quant.block)
    k = quant_dequant(k, ix.quant.format, ix.quant.block)
    assert got.shape == (1, S, ix.topk)
    assert int(got.max()) < T and int(got.min()) == -1
    last = got[0, -256:]
    assert (last >= 0).all() and last.max() >= T - 4096 * 16
    # the last rows against the exact top-k
    exact = ref.mask_invisible(ref.indexer_scores(q, w[:, -256:], k)[0], torch.arange(S - 256, S, device="cuda"), m)
    rec, det = tie_aware_recall(last, exact, ix.topk)
    assert rec == 1.0 and det["duplicates"] == 0, det


def test_nan_scores_rank_last_on_the_gpu(fresh_seed):
    """NaN index keys rank below every number for every query that sees more than K rows; a query whose
    index query is NaN takes its first K visible rows (all its scores tie as NaN)."""
    spec = csa_dsl.preset("v4-flash")
    ix, m = spec.indexer, spec.ratio
    S = 8192
    T = S // m
    q = torch.randn(1, S, ix.heads, ix.dim, device="cuda").bfloat16()
    w = torch.randn(1, S, ix.heads, device="cuda") * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(1, T, ix.dim, device="cuda").bfloat16()
    bad = [5, 100, 1500]
    k[0, bad, 7] = float("nan")
    q[0, 6000, 3, 0] = float("nan")
    got = csa_dsl.indexer_topk(q, w, k, ix.topk, m, quant=ix.quant)
    if ix.quant is not None:       # the exact scores below are those of the quantised operands
        q, k = quant_dequant(q, ix.quant.format, ix.quant.block), quant_dequant(k, ix.quant.format, ix.quant.block)
    torch.cuda.synchronize()
    nvis = (torch.arange(S, device="cuda") + 1) // m
    picked_bad = torch.isin(got[0], torch.tensor(bad, device="cuda", dtype=torch.int32)).any(-1)
    # queries with at least K numeric visible scores must not take a NaN row (with fewer they must)
    bad_visible = sum((nvis > b).int() for b in bad)
    numeric = nvis - bad_visible >= ix.topk
    numeric[6000] = False          # its scores are all NaN: rows 0..K-1 by the tie rule, 5 and 100 among them
    short = (nvis > ix.topk) & ~numeric
    assert picked_bad[short].all(), fresh_seed
    assert not picked_bad[numeric].any(), fresh_seed
    assert sorted(got[0, 6000].tolist()) == list(range(ix.topk))
    exact = _exact_scores(q, w, k, 7000, 7512, m)
    rec, det = tie_aware_recall(got[0, 7000:7512], torch.nan_to_num(exact, nan=float("-inf")), ix.topk)
    assert rec == 1.0 and det["duplicates"] == 0, det


@pytest.mark.parametrize("topk", [512, 1024, 2048, 4096])
@pytest.mark.parametrize("dist", ["normal", "sorted_up", "ties"])
def test_select_every_segment_count(topk, dist, fresh_seed):
    """select_chunk on each of its launch shapes (cost.select_segments: 4 warps to top-1,024, 8 from top-2,048; the
    register cap at top-1,024 and 2,048), with and without the group maxima, against the exact top-K of every row
    (ties to the smaller column) in index order: candidates spread over every segment, all in the last one (sorted
    rows), or tied at the threshold past CAP (the exact walk). The lists start poisoned with -7."""
    from kernels_triton.indexer import kernel as ki
    from kernels_triton.indexer import naive
    from kernels_triton.indexer.cost import candidate_slots, select_capacity
    cap = select_capacity(topk)
    n, s_first = 48, 6 * cap
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    sc = torch.randn(n, s_first + n, device="cuda", generator=g)
    if dist == "sorted_up":
        sc = torch.sort(sc, dim=-1).values
    elif dist == "ties":
        sc = torch.round(sc * 2) / 2      # a few values: many rows tie at the threshold
    exp = torch.sort(naive.topk_select(sc[None], torch.arange(s_first, s_first + n), 1, topk)[0], dim=-1).values
    for gmax in (None, naive.group_maxima(sc, s_first, 1, cap)):
        out = torch.full((n, topk), -7, dtype=torch.int32, device="cuda")
        cand = torch.empty(n, candidate_slots(topk), dtype=torch.int32, device="cuda")
        ki.select_chunk(sc, out, cand, s_first=s_first, ratio=1, k_eff=topk, topk=topk, gmax=gmax)
        assert torch.equal(out, exp), (fresh_seed, topk, dist, gmax is None)


@pytest.mark.parametrize("S,s_first,n", [(262144, 262144 - 2048, 2048), (8192, 1000, 333), (4096, 0, 2048),
                                         (65536, 65536 - 1037, 1037)])
def test_gluon_score_walk_against_triton_and_fp64(S, s_first, n, fresh_seed):
    """V4's FP8 score walk in Gluon (score_gluon.py) against the Triton walk on the same packed operands, both into
    NaN-poisoned buffers: the same cells written (-inf past each query's visible rows, nothing past the block's last
    row), the same NaN scores (a NaN key row, a NaN query), every other score bit for bit (the head sum adds in the
    Triton walk's order, so a packed batch, which takes the Triton walk, still equals its sequences run alone), and
    both against an fp64 reference of the dequantised operands. Odd n: a partial last block. The same walk with
    the selection's group maxima (`gmax`, v4-flash's and v4-pro's CAP): the same scores, the maxima equal to
    naive.group_maxima of them (rows seeing more than CAP rows), and the selection's lists with them equal to its
    lists without (its own pass 1)."""
    from kernels_triton.indexer import kernel as ki
    from kernels_triton.quant import kernel as qk
    ratio, T = 4, S // 4
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    q = torch.randn(n, 64, 128, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, 64, device="cuda", generator=g)
    k = torch.randn(T, 128, device="cuda", generator=g).bfloat16()
    k[7, 3] = float("nan")
    q[n // 2, 5, 0] = float("nan")
    q8, qs = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(q.shape[:-1], device="cuda")
    k8, ks = torch.empty(k.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(T, device="cuda")
    qk.pack_rows(q, q8, qs, fmt="e2m1", block=32)
    qk.pack_rows(k, k8, ks, fmt="e2m1", block=32)
    ld = (s_first + n) // ratio + 64
    outs = {}
    for walk in ("auto", "triton"):
        outs[walk] = torch.full((n, ld), float("nan"), device="cuda")
        ki.score_chunk_fp8(q8, qs, w, k8, ks, outs[walk], s_first=s_first, ratio=ratio, walk=walk)
    a, b = outs["auto"], outs["triton"]
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isneginf(), b.isneginf()), fresh_seed
    nvis = (s_first + torch.arange(n, device="cuda") + 1) // ratio
    cols = torch.arange(ld, device="cuda")
    assert a[n // 2, :nvis[n // 2]].isnan().all()                     # the NaN query: NaN wherever it sees
    if nvis[0] > 7:
        assert a[0, 7].isnan() and not a[0, :7].isnan().any()          # the NaN key row
    fin = a.isfinite()
    assert torch.equal(fin, (cols[None, :] < nvis[:, None]) & ~a.isnan())
    assert torch.equal(a[~a.isnan()].view(torch.int32), b[~b.isnan()].view(torch.int32)), fresh_seed
    rows = torch.tensor([0, n // 3, n - 1], device="cuda")
    qd = q8[rows].double() * qs[rows].double()[..., None]
    ref = (torch.einsum("rhd,td->rht", qd, k8.double() * ks.double()[:, None]).clamp_min(0)
           * w[rows].double()[..., None]).sum(1)
    for i, r in enumerate(rows.tolist()):
        L = int(nvis[r])
        keep = torch.arange(L, device="cuda") != 7
        for out in (a, b):
            x, y = out[r, :L][keep].double(), ref[i, :L][keep]
            assert float((x - y).norm() / y.norm().clamp_min(1e-30)) < 1e-6, (fresh_seed, r)
    from kernels_triton.indexer import naive
    from kernels_triton.indexer.cost import candidate_slots, select_capacity
    for topk in (512, 1024):
        cap = select_capacity(topk)
        c = torch.full((n, ld), float("nan"), device="cuda")
        gm = torch.full((n, cap), float("nan"), device="cuda")
        ki.score_chunk_fp8(q8, qs, w, k8, ks, c, s_first=s_first, ratio=ratio, gmax=gm)
        assert torch.equal(c.view(torch.int32), a.view(torch.int32)), fresh_seed
        long = nvis > cap
        exp = naive.group_maxima(a, s_first, ratio, cap)
        assert torch.equal(gm[long].isnan(), exp[long].isnan()), fresh_seed
        assert torch.equal(gm[long].nan_to_num(), exp[long].nan_to_num()), fresh_seed
        lists = []
        for gmax in (None, gm):
            out = torch.full((n, topk), -7, dtype=torch.int32, device="cuda")
            cand = torch.empty(n, candidate_slots(topk), dtype=torch.int32, device="cuda")
            ki.select_chunk(a, out, cand, s_first=s_first, ratio=ratio, k_eff=topk, topk=topk, gmax=gmax)
            lists.append(out)
        assert torch.equal(lists[0], lists[1]), fresh_seed


@pytest.mark.parametrize("name,S,n", [("v4-flash-bf16", 65536, 2048), ("v4-flash-bf16", 8192, 333),
                                      ("v3.2", 32768, 1037)])
def test_gluon_bf16_walk_equals_the_triton_walk(name, S, n, fresh_seed):
    """The Gluon walk on bf16 operands (the bf16 presets' raw index operands; V3.2's e4m3 values, packed as bf16 with
    a scale a row) against _score_kernel on the same operands, into NaN-poisoned buffers: the same cells and bits
    (with a NaN key row and a NaN query), with and without the group maxima (both walk shapes), and the maxima
    equal to naive.group_maxima of the scores. A packed batch, which the Triton walk scores, then still equals its
    sequences run alone (test_varlen_gpu.py)."""
    from kernels_triton.indexer import cost as icost
    from kernels_triton.indexer import kernel as ki
    from kernels_triton.indexer import score_gluon
    from kernels_triton.quant import kernel as qk
    spec = csa_dsl.preset(name)
    ix, m = spec.indexer, spec.ratio
    T, s0 = S // m, S - n
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g)
    k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
    k[7, 3] = float("nan")
    q[n // 2, 5, 0] = float("nan")
    if ix.quant is not None:        # V3.2: e4m3 values as bf16, one scale a row
        k8, ks = torch.empty_like(k), torch.empty(T, device="cuda")
        qk.pack_rows(k, k8, ks, fmt=ix.quant.format, block=ix.quant.block)
        q8, qs = torch.empty_like(q), torch.empty(n, ix.heads, device="cuda")
        qk.pack_rows(q, q8, qs, fmt=ix.quant.format, block=ix.quant.block)

    def run(out, **kw):
        if ix.quant is None:
            ki.score_chunk(q, w, k, out, s_first=s0, ratio=m, **kw)
        else:
            ki.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s0, ratio=m, **kw)
    ld = icost.score_ld(T)
    ref_scores = torch.full((n, ld), float("nan"), device="cuda")
    run(ref_scores, walk="triton")
    assert ref_scores[n // 2, :(s0 + n // 2 + 1) // m].isnan().all()
    cap = icost.select_capacity(ix.topk)
    nvis = (s0 + torch.arange(n, device="cuda") + 1) // m
    for shape in (score_gluon.WALK_2X4, score_gluon.WALK_4X2, None):
        out = torch.full((n, ld), float("nan"), device="cuda")
        gm = torch.full((n, cap), float("nan"), device="cuda") if shape is not None else None
        if shape is None:
            run(out)                # walk='auto': the Gluon walk, no maxima
        else:
            a = (q, None, w, k, None) if ix.quant is None else (q8, qs, w, k8, ks)
            score_gluon.score_chunk_gluon(*a, out, s_first=s0, ratio=m, store_queries=ki.score_block_queries(ix.heads),
                                          gmax=gm, walk=shape)
        assert torch.equal(out.isnan(), ref_scores.isnan()), (shape, fresh_seed)
        assert torch.equal(out[~out.isnan()].view(torch.int32), ref_scores[~ref_scores.isnan()].view(torch.int32)), \
            (shape, fresh_seed)
        if gm is not None:
            long = nvis > cap
            exp = ref.group_maxima(ref_scores, s0, m, cap)
            assert torch.equal(gm[long].nan_to_num(), exp[long].nan_to_num()), (shape, fresh_seed)
