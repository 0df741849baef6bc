"""The reference path (every stage's naive.py, composed into the same Program as the kernels) against
second, independent dense formulations of every stage."""
import dataclasses
import math

import pytest
import torch

import csa_dsl
from csa_dsl import Compressor, Indexer, Pipeline, Quant, RoPE, Schedule, SelfIndex, SparseAttention
from kernels_tilelang.sparse_mla import naive as att_ref
from kernels_triton.compressor import naive as comp_ref
from kernels_triton.compressor.naive import hadamard_matrix
from kernels_triton.indexer import naive as ref
from kernels_triton.quant.naive import quant_dequant
from kernels_triton.rope import naive as rope_ref
from kernels_triton.rope.tables import cos_sin
from pipeline.stages.compressor import params, rotary


def reference(spec, inp, chunk=None, **kw):
    """The whole forward on the reference path."""
    return csa_dsl.compile(spec, "cpu", Schedule(path="reference", query_chunk=chunk))(**inp, **kw)


def dense_compress(values, gate, ape, norm, c: Compressor):
    """Entry by entry: entry i pools tokens [m*i - m, m*i + m) (overlap) or [m*i, m*i + m)."""
    B, S, _ = values.shape
    m, D = c.ratio, c.dim
    T = S // m
    out = torch.empty(B, T, D, dtype=torch.bfloat16)
    for b in range(B):
        for i in range(T):
            slots_v, slots_g = [], []
            toks = range(m * i - m, m * i + m) if c.overlap else range(m * i, m * i + m)
            for p in toks:
                if p < 0:
                    continue
                own = p >= m * i
                lo = D if (c.overlap and own) else 0
                slots_v.append(values[b, p, lo:lo + D].double())
                slots_g.append(gate[b, p, lo:lo + D].double() + ape[p % m, lo:lo + D].double())
            v, g = torch.stack(slots_v), torch.stack(slots_g)
            pooled = (torch.softmax(g, dim=0) * v).sum(0).float().to(torch.bfloat16).double()
            normed = (pooled / torch.sqrt((pooled ** 2).mean() + c.norm_eps) * norm.double())
            row = normed.float().to(torch.bfloat16).double()
            if c.rope is not None:
                rd = c.rope.dim
                cos, sin = cos_sin(rotary(c.rope), torch.tensor([i * m]))
                z = torch.complex(row[-rd:][0::2], row[-rd:][1::2]) * torch.complex(cos[0].double(), sin[0].double())
                row = row.clone()
                row[-rd:][0::2], row[-rd:][1::2] = z.real, z.imag
                row = row.float().to(torch.bfloat16).double()
            if c.hadamard:
                n = D
                H = torch.tensor([[(-1) ** bin(r & q).count("1") for q in range(n)] for r in range(n)],
                                 dtype=torch.float64) / math.sqrt(n)
                row = (row @ H).float().to(torch.bfloat16).double()
            out[b, i] = row.to(torch.bfloat16)
    return out


def compressor_inputs(c: Compressor, B, S, seed):
    g = torch.Generator().manual_seed(seed)
    cd = c.coff * c.dim
    return (torch.randn(B, S, cd, generator=g), torch.randn(B, S, cd, generator=g),
            torch.randn(c.ratio, cd, generator=g) * 0.5, 1 + 0.1 * torch.randn(c.dim, generator=g))


@pytest.mark.parametrize("m,overlap,rope,had", [(1, False, True, False), (2, False, True, False),
                                                 (4, True, True, False), (4, True, False, True),
                                                 (8, False, True, True), (2, True, True, False)])
def test_compressor_vs_dense(m, overlap, rope, had):
    c = Compressor(ratio=m, dim=32, overlap=overlap, rope=RoPE(dim=16) if rope else None, hadamard=had)
    vals, gate, ape, norm = compressor_inputs(c, 2, 4 * m + 3, seed=m)   # trailing tokens not compressed
    cos, sin = cos_sin(rotary(c.rope), torch.arange(4 * m + 3)) if c.rope else (None, None)
    got = comp_ref.compress(vals, gate, ape, norm, **params(c), cos=cos, sin=sin, row_chunk=3)  # chunks cross blocks
    exp = dense_compress(vals, gate, ape, norm, c)
    assert got.shape == (2, (4 * m + 3) // m, 32)
    # bf16 rounding of the same fp32 value can differ by one ulp where the op order differs
    diff = (got.float() - exp.float()).abs()
    assert (diff <= 2 ** -7 * exp.float().abs().clamp(min=2 ** -6)).all(), diff.max()
    assert (diff == 0).float().mean() > 0.9


def test_compressor_overlap_semantics():
    """Entry 0 sees only its own block (the previous-block slots are -inf); entry i sees block i-1."""
    c = Compressor(ratio=4, dim=16, overlap=True, rope=None)
    vals, gate, ape, norm = compressor_inputs(c, 1, 12, seed=1)
    base = comp_ref.pool(vals, gate, ape, c.ratio, c.overlap, 0, 3)
    v2 = vals.clone()
    v2[:, 0:4, :16] += 100.0   # block 0's first half only feeds entry 1
    p2 = comp_ref.pool(v2, gate, ape, c.ratio, c.overlap, 0, 3)
    assert torch.equal(p2[:, 0], base[:, 0]) and not torch.allclose(p2[:, 1], base[:, 1])
    assert torch.equal(p2[:, 2], base[:, 2])
    v3 = vals.clone()
    v3[:, 4:8, 16:] += 100.0   # block 1's second half feeds entry 1 only
    p3 = comp_ref.pool(v3, gate, ape, c.ratio, c.overlap, 0, 3)
    assert torch.equal(p3[:, 0], base[:, 0]) and torch.equal(p3[:, 2], base[:, 2])
    # a slice starting at row 1 rebuilds the previous block's slots
    assert torch.allclose(comp_ref.pool(vals, gate, ape, c.ratio, c.overlap, 1, 3), base[:, 1:3])


def test_hadamard_is_orthonormal():
    h = hadamard_matrix(64)
    assert torch.allclose(h @ h.T, torch.eye(64), atol=1e-6)


def dense_scores(q, w, k, round_bf16=False):
    """The index scores in float64; `round_bf16` (Indexer.score_rounding "bf16"): each head's dot, the weight,
    each weighted term and the head sum rounded to bf16 (through fp32, where the official code sums)."""
    bf = (lambda x: x.float().bfloat16().double()) if round_bf16 else (lambda x: x)
    out = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for h in range(q.shape[2]):
        out += bf(bf(w[:, :, h, None].double()) * torch.relu(bf(q[:, :, h].double() @ k.double().transpose(1, 2))))
    return bf(out)


def test_indexer_scores_vs_dense():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, 4, 16, generator=g).bfloat16()
    w = torch.randn(2, 9, 4, generator=g)
    k = torch.randn(2, 5, 16, generator=g).bfloat16()
    got = ref.indexer_scores(q, w, k)
    assert torch.allclose(got.double(), dense_scores(q, w, k), rtol=1e-5, atol=1e-5)


def python_topk(row, nvis, k):
    cand = sorted(range(nvis), key=lambda t: (-row[t], t))[:k]
    return cand + [-1] * (k - len(cand))


@pytest.mark.parametrize("ratio", [1, 4])
def test_topk_tie_rule_and_padding(ratio):
    S = 40
    T = S // ratio
    g = torch.Generator().manual_seed(ratio)
    scores = torch.randint(0, 4, (1, S, T), generator=g).float()   # many ties
    pos = torch.arange(S)
    k = 6
    got = ref.topk_select(scores, pos, ratio, k)[0]
    for s in range(S):
        nvis = (s + 1) // ratio
        exp = python_topk(scores[0, s].tolist(), nvis, min(k, T))
        assert got[s].tolist() == exp, (s, got[s].tolist(), exp)
    # early queries: fewer visible rows than K -> -1 padding
    assert (got[0] == -1).sum() == min(k, T) - (1 // ratio)


def test_window_indices_vs_loops():
    W = 8
    pos = torch.arange(20)
    got = ref.window_indices(pos, W)
    for s in range(20):
        exp = list(range(max(0, s - W + 1), s + 1))
        assert got[s].tolist() == exp + [-1] * (W - len(exp))


def dense_attention(q, kv, allowed, scale, v_dim, sink):
    """Dense softmax over all rows with a boolean mask; the sink is one more logit column with value 0."""
    B, S, H, D = q.shape
    logits = torch.einsum("bshd,brd->bshr", q.double(), kv.double()) * scale
    logits = logits.masked_fill(~allowed[:, :, None, :], float("-inf"))
    vals = kv[..., :v_dim].double()
    if sink is not None:
        logits = torch.cat([logits, sink.double()[None, None, :, None].expand(B, S, H, 1)], dim=-1)
        vals = torch.cat([vals, torch.zeros(B, 1, v_dim, dtype=torch.float64)], dim=1)
    p = torch.softmax(logits, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)   # all -inf rows -> zeros
    return torch.einsum("bshr,brd->bshd", p, vals)


@pytest.mark.parametrize("sink", [False, True])
def test_sparse_attention_vs_dense(sink):
    g = torch.Generator().manual_seed(int(sink))
    B, S, H, D, R, NI = 2, 6, 3, 32, 20, 7
    q = torch.randn(B, S, H, D, generator=g).bfloat16()
    kv = torch.randn(B, R, D, generator=g).bfloat16()
    idx = torch.stack([torch.stack([torch.randperm(R, generator=g)[:NI] for _ in range(S)]) for _ in range(B)])
    idx = idx.masked_fill(torch.rand(B, S, NI, generator=g) < 0.3, -1).int()
    idx[0, 0] = -1                                     # a query with no valid key
    allowed = torch.zeros(B, S, R, dtype=torch.bool)
    for b in range(B):
        for s in range(S):
            for j in idx[b, s].tolist():
                if j >= 0:
                    allowed[b, s, j] = True
    sk = torch.randn(H, generator=g) if sink else None
    got, lse = att_ref.sparse_attention(q, kv, idx, 0.17, 24, sk, return_lse=True)
    exp = dense_attention(q, kv, allowed, 0.17, 24, sk)
    assert torch.allclose(got.double(), exp, atol=1e-5)
    assert (got[0, 0] == 0).all() and torch.isfinite(got).all()
    assert (lse[0, 0] == (sk if sink else torch.full((H,), float("-inf")))).all()


def small_family(name: str) -> Pipeline:
    """A tiny pipeline of a preset's shape family (same stages and options, small dims)."""
    if name == "v3.2":
        return Pipeline(name="tiny-v3.2", compressor=None, indexer=Indexer(heads=8, dim=16, topk=12),
                        attention=SparseAttention(heads=4, qk_dim=48, v_dim=32, window=0, sink=False,
                                                  scale=0.3, inverse_rope=None))
    rope = RoPE(dim=16)
    if name == "hca":       # V4's m = 128 layers: no overlap, no indexer (here m = 8)
        return Pipeline(name="tiny-hca", compressor=Compressor(ratio=8, dim=32, overlap=False, rope=rope),
                        attention=SparseAttention(heads=4, qk_dim=32, v_dim=32, window=6, sink=True,
                                                  inverse_rope=rope))
    if name == "selfindex":   # the 1-bit self-index in place of the lightning indexer
        return Pipeline(name="tiny-selfindex", compressor=Compressor(ratio=4, dim=64, rope=rope),
                        indexer=SelfIndex(topk=5),
                        attention=SparseAttention(heads=4, qk_dim=64, v_dim=32, window=6, sink=True, inverse_rope=rope))
    if name == "window":    # V4's window-only layers: RoPE without YaRN
        return Pipeline(name="tiny-window", attention=SparseAttention(
            heads=4, qk_dim=32, v_dim=32, window=6, sink=True, inverse_rope=RoPE(dim=16, yarn=None, base=1e4)))
    if name == "v3.2-quant":     # V3.2's FP8 indexer: one scale per index row
        return small_family("v3.2").replace(name="tiny-v3.2-quant", indexer=Indexer(heads=8, dim=16, topk=12,
                                                                                    quant=Quant("e4m3", 16)))
    if name == "v4-flash-bf16-scores":    # V4's steps, and the index score rounded as the official code's
        p = small_family("v4-flash-quant")
        return p.replace(name="tiny-v4-flash-bf16-scores",
                         indexer=dataclasses.replace(p.indexer, score_rounding="bf16"))
    if name == "v4-flash-quant":  # V4's steps: FP8 on the non-RoPE kv channels, FP4 on idx_q and index keys
        p = small_family("v4-flash")
        return p.replace(name="tiny-v4-flash-quant",
                         attention=dataclasses.replace(p.attention, kv_quant=Quant("e4m3", 8)),
                         indexer=dataclasses.replace(p.indexer, quant=Quant("e2m1", 8)))
    return Pipeline(name=f"tiny-{name}", compressor=Compressor(ratio=4, dim=32, rope=rope),
                    indexer=Indexer(heads=8, dim=16, topk=5 if name == "v4-flash" else 7,
                                    compressor=Compressor(ratio=4, dim=16, rope=rope, hadamard=True)),
                    attention=SparseAttention(heads=4 if name == "v4-flash" else 8, qk_dim=32, v_dim=32, window=6,
                                              sink=True, inverse_rope=rope))


def dense_allowed(spec, inp, S):
    """[B, S, R] bool: the rows each query attends, from dense pieces (docs/semantics.md sections 1-4, 6):
    the window, then the top-k of the dense scores (an indexer), every visible row (HCA) or nothing
    (window-only); and the row table [kv | compressed kv]."""
    B = inp["q"].shape[0]
    a = spec.attention
    # the quantisation steps (section 5; quant_dequant is checked against a plain float64 implementation
    # of the section in test_quant.py): every attention row, idx_q and every index key
    kq = (lambda x: quant_dequant(x, a.kv_quant.format, a.kv_quant.block, a.kv_quant_channels)) \
        if a.kv_quant is not None else (lambda x: x)
    iq = getattr(spec.indexer, "quant", None)
    xq = (lambda x: quant_dequant(x, iq.format, iq.block)) if iq is not None else (lambda x: x)
    rows, off = kq(inp["kv"]), 0
    if spec.compressor is not None:
        ckv = kq(dense_compress(inp["cmp_kv"], inp["cmp_gate"], inp["cmp_ape"], inp["cmp_norm"], spec.compressor))
        rows, off = torch.cat([rows, ckv], dim=1), S
    sc = None
    if isinstance(spec.indexer, SelfIndex):     # alpha_t * (sum_h q) . sign(K_t), sign(0) = +1, in fp64
        keys = rows[:, off:].double()
        sign = torch.where(keys >= 0, 1.0, -1.0).double()
        sc = torch.einsum("bsd,btd->bst", inp["q"].double().sum(2), sign) * keys.abs().mean(-1)[:, None, :]
    elif spec.indexer is not None:
        k_idx = inp["idx_k"] if spec.compressor is None else dense_compress(
            inp["idx_kv"], inp["idx_gate"], inp["idx_ape"], inp["idx_norm"], spec.indexer.compressor)
        sc = dense_scores(xq(inp["idx_q"]), inp["idx_w"], xq(k_idx), spec.indexer.score_rounding == "bf16")
    T = S // spec.ratio if spec.layer != "window" else 0
    allowed = torch.zeros(B, S, rows.shape[1], dtype=torch.bool)
    for b in range(B):
        for s in range(S):
            nvis = (s + 1) // spec.ratio
            if sc is not None:
                sel = python_topk(sc[b, s].tolist(), nvis, min(spec.indexer.topk, T))
            else:
                sel = list(range(min(nvis, T))) if spec.layer == "hca" else []
            for t in sel:
                if t >= 0:
                    allowed[b, s, t + off] = True
            for j in range(max(0, s - a.window + 1), s + 1) if a.window else []:
                allowed[b, s, j] = True
    return allowed, rows


def dense_forward(spec, inp):
    """The whole forward from dense pieces: dense compressor, dense scores, python top-k, masked attention."""
    S = inp["q"].shape[1]
    a = spec.attention
    allowed, rows = dense_allowed(spec, inp, S)
    att = dense_attention(inp["q"], rows, allowed, a.softmax_scale, a.v_dim, inp.get("sink"))
    out = att.float().to(torch.bfloat16)
    if a.inverse_rope is not None:
        out = rope_ref.rope_rows_bf16(out, rotary(a.inverse_rope), torch.arange(S), inverse=True, heads=True)
    return out


@pytest.mark.parametrize("family", ["v4-flash", "v4-pro", "v3.2", "v4-flash-quant", "v3.2-quant",
                                    "v4-flash-bf16-scores"])
def test_forward_vs_dense(family):
    spec = small_family(family)
    S = 45
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=7)
    out, idx = reference(spec, inp, chunk=8, return_indices=True)
    exp = dense_forward(spec, inp)
    err = (out.double() - exp.double()).norm() / exp.double().norm()
    assert err < 1e-2, err
    assert idx.shape == (1, S, spec.index_width(S))
    # early queries: the window and the top-k part are -1 padded
    W = spec.attention.window
    if W:
        assert idx[0, 0, 1:W].eq(-1).all() and idx[0, 0, 0] == 0
    if spec.ratio == 1:   # s = 0 sees only row 0
        assert idx[0, 0, W] == 0 and idx[0, 0, W + 1:].eq(-1).all()
    else:                 # s = 0 sees no compressed row
        assert idx[0, 0, W:].eq(-1).all()


# S: not a multiple of m, shorter than the window, shorter than m (no compressed row yet)
@pytest.mark.parametrize("family", ["hca", "window", "selfindex"])
@pytest.mark.parametrize("S", [45, 5, 7])
@pytest.mark.parametrize("path_backend", [("reference", "torch"), ("composed", "torch"),
                                          pytest.param(("composed", "interpret"), marks=pytest.mark.interpret)])
def test_layer_kinds_vs_dense(family, S, path_backend):
    """HCA, window-only and self-index layers, batch 2, every path against the dense formulation; the key
    lists too."""
    path, backend = path_backend
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 2, S, "cpu", seed=S)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path=path, query_chunk=8), backend=backend)
    out, idx = fwd(**inp, return_indices=True)
    exp = dense_forward(spec, inp)
    err = (out.double() - exp.double()).norm() / exp.double().norm()
    assert err < 1e-2, (err, path, backend)
    allowed, _ = dense_allowed(spec, inp, S)
    listed = torch.zeros_like(allowed)
    for b in range(2):
        for s in range(S):
            ids = [j for j in idx[b, s].tolist() if j >= 0]
            assert len(ids) == len(set(ids))
            listed[b, s, ids] = True
    assert torch.equal(listed, allowed)
    assert idx.shape == (2, S, spec.index_width(S))
    assert torch.equal(fwd(**inp), out)       # the program without returned lists computes the same


def test_hca_at_ratio_128_sees_every_visible_row():
    """The real HCA ratio: a sequence of 300 tokens has T = 2 rows, visible from s = 127 and s = 255."""
    spec = csa_dsl.preset("v4-flash-hca")
    assert spec.layer == "hca" and spec.index_width(300) == 130
    inp = csa_dsl.random_inputs(spec, 1, 300, "cpu", seed=3)
    _, idx = reference(spec, inp, chunk=64, return_indices=True)
    assert idx[0, 126, 128:].eq(-1).all()
    assert idx[0, 127, 128:].tolist() == [300, -1] and idx[0, 299, 128:].tolist() == [300, 301]


def test_reference_chunking_is_invariant():
    spec = small_family("v4-flash")
    inp = csa_dsl.random_inputs(spec, 2, 37, "cpu", seed=1)
    a, ia = reference(spec, inp, chunk=5, return_indices=True)
    b, ib = reference(spec, inp, chunk=64, return_indices=True)
    assert torch.equal(a, b) and torch.equal(ia, ib)


@pytest.mark.parametrize("family", ["v4-flash", "v3.2", "v4-flash-quant", "v3.2-quant"])
def test_materialize_matches_reference(family):
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 2, 50, "cpu", seed=2)
    a, ia = reference(spec, inp, return_indices=True)
    b, ib = csa_dsl.compile(spec, "cpu", Schedule(path="materialize"))(**inp, return_indices=True)
    assert torch.equal(ia, ib) and torch.equal(a, b)       # the same stages, one chunk of all S queries


def test_public_indexer_topk_cpu():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 64, 8, 16, generator=g).bfloat16()
    w = torch.randn(1, 64, 8, generator=g)
    k = torch.randn(1, 16, 16, generator=g).bfloat16()
    got = csa_dsl.indexer_topk(q, w, k, topk=5, ratio=4)
    assert got.dtype == torch.int32 and got.shape == (1, 64, 5)
    sc = dense_scores(q, w, k)
    for s in range(64):
        assert got[0, s].tolist() == python_topk(sc[0, s].tolist(), (s + 1) // 4, 5)
    with pytest.raises(ValueError, match=r"idx_k has 15 rows but S // ratio"):
        csa_dsl.indexer_topk(q, w, k[:, :15], topk=5, ratio=4)
    with pytest.raises(csa_dsl.SpecError, match="backend must be"):
        csa_dsl.indexer_topk(q, w, k, topk=5, ratio=4, backend="magic")


def test_yarn_frequencies_by_hand():
    """YaRN inverse frequencies of the V4 RoPE (dim 64, base 160000, factor 16, original length 65536,
    beta_fast 32, beta_slow 1), from the formula by hand, not from the code under test:
      corr_dim(beta) = dim * ln(65536 / (2 pi beta)) / (2 ln 160000): 15.45 (beta 32), 24.71 (beta 1),
      so low = 15, high = 25; pair i keeps base^(-2i/64) below 15, is divided by 16 from 25 on, and in
      between mixes the two with ramp (i - 15) / 10. 160000^(1/4) = 20, so base^(-2i/64) = 20^(-i/8)."""
    from kernels_triton.rope.tables import inv_freq
    f = inv_freq(rotary(RoPE(dim=64))).double()
    expect = {0: 1.0, 10: 20 ** -1.25, 15: 20 ** -1.875,
              20: 20 ** -2.5 * (0.5 / 16 + 0.5),         # ramp 0.5
              24: 20 ** -3.0 * (0.9 / 16 + 0.1),         # = 1.953125e-5
              25: 20 ** -3.125 / 16, 31: 20 ** -3.875 / 16}
    for i, v in expect.items():
        assert math.isclose(f[i].item(), v, rel_tol=1e-6), (i, f[i].item(), v)
    # without YaRN (the window-only layers): plain base^(-2i/dim)
    g = inv_freq(rotary(RoPE(dim=64, yarn=None, base=10000.0))).double()
    for i in (0, 7, 31):
        assert math.isclose(g[i].item(), 10000.0 ** (-2 * i / 64), rel_tol=1e-6)
