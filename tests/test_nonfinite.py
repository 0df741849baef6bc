"""Non-finite inputs (docs/semantics.md section 9): never silently finite, the same on every path.

The expectation comes from the dense formula written out per (query, head) in float64 with
IEEE arithmetic (M = max(valid logits, sink); out = sum exp(l - M) V / (sum exp(l - M) + exp(sink - M));
0 only when that denominator is exactly 0), over the key lists the pipeline selected; the key lists
themselves are checked against the rule that a NaN score ranks below every number.
"""
import math

import pytest
import torch

import csa_dsl
from csa_dsl import InputError, Schedule
from kernels_tilelang.sparse_mla import naive as att_ref
from kernels_triton.indexer import naive as ix_ref
from kernels_triton.rope.tables import cos_sin

from test_reference import small_family

S = 40
PATHS = [("reference", None), ("composed", "torch"), ("materialize", None),
         pytest.param("composed", "interpret", marks=pytest.mark.interpret)]


def dense_formula(q, rows, keys, scale, v_dim, sink):
    """out [s, H, v_dim] float64, per (query, head), literally the formula over the valid keys."""
    n, H, _ = q.shape
    out = torch.zeros(n, H, v_dim, dtype=torch.float64)
    for s in range(n):
        ids = [j for j in keys[s].tolist() if j >= 0]
        for h in range(H):
            ls = [scale * float(q[s, h].double() @ rows[j].double()) for j in ids]
            sk = float(sink[h]) if sink is not None else None
            cand = ls + ([sk] if sk is not None else [])
            if any(math.isnan(x) for x in cand):
                out[s, h] = float("nan")
                continue
            M = max(cand) if cand else float("-inf")
            M = 0.0 if M == float("-inf") else M
            den = sum(math.exp(x - M) for x in ls) + (math.exp(sk - M) if sk is not None else 0.0)
            num = torch.zeros(v_dim, dtype=torch.float64)
            for x, j in zip(ls, ids):
                num += math.exp(x - M) * rows[j, :v_dim].double()
            out[s, h] = 0.0 if den == 0 else num / den
    return out


def run(spec, inp, path, backend):
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path=path, query_chunk=16 if path != "materialize" else None),
                          backend=backend)
    return fwd(**inp, return_indices=True)


def rows_of(spec, inp):
    """The attention's KV table [kv || compressed kv] the reference builds (NaN rows included)."""
    from kernels_triton.compressor import naive as comp
    from pipeline.stages.compressor import params, rotary
    c = spec.compressor
    if c is None:
        return inp["kv"][0]
    cos, sin = cos_sin(rotary(c.rope), torch.arange(S))
    ckv = comp.compress(inp["cmp_kv"], inp["cmp_gate"], inp["cmp_ape"], inp["cmp_norm"], **params(c), cos=cos, sin=sin)
    return torch.cat([inp["kv"], ckv], dim=1)[0]


def expected(spec, inp, keys):
    a = spec.attention
    att = dense_formula(inp["q"][0], rows_of(spec, inp), keys[0], a.softmax_scale, a.v_dim, inp.get("sink"))
    return att


def poisoned(name, index, value, family="v4-flash", seed=4):
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=seed)
    clean = {k: v.clone() for k, v in inp.items()}
    inp[name][index] = value
    return spec, clean, inp


@pytest.mark.parametrize("path,backend", PATHS)
@pytest.mark.parametrize("name,index,value", [
    ("kv", (0, 10, 7), float("nan")),          # a window row: every query whose window holds it
    ("kv", (0, 0, 5), float("nan")),           # row 0: -1 slots must not read it
    ("sink", (2,), float("nan")),              # its head, everywhere
    ("sink", (1,), float("inf")),              # exp(inf - inf): NaN, as the formula says
    ("cmp_gate", (0, 9, 3), float("inf")),     # a compressed row NaN: the queries that select it
    ("q", (0, 30, 1, 0), float("nan")),        # that (query, head) only
])
def test_attention_inputs_propagate_as_the_formula(path, backend, name, index, value):
    spec, clean, inp = poisoned(name, index, value)
    out, keys = run(spec, inp, path, backend)
    _, clean_keys = run(spec, clean, path, backend)
    assert torch.equal(keys, clean_keys)            # attention inputs do not move the selection
    exp = expected(spec, inp, keys)
    nan = torch.isnan(out[0].float())
    assert nan.any(), "nothing became NaN"
    assert torch.equal(nan, torch.isnan(exp)), (nan.sum(), torch.isnan(exp).sum())
    # where the formula is finite the pipeline is too, and right (the inverse RoPE is per head)
    assert torch.isfinite(out[0].float()[~nan]).all()
    if name == "kv":
        row = index[1]
        holds = (keys[0] == row).any(-1)
        assert torch.equal(nan.any(-1).any(-1), holds) and holds.any()
    if name == "sink":
        assert nan[:, index[0]].all() and not nan[:, [h for h in range(nan.shape[1]) if h != index[0]]].any()


@pytest.mark.parametrize("path,backend", PATHS)
def test_nan_index_scores_rank_last(path, backend):
    """A NaN in a query's index query: all its scores are NaN, so it takes the first visible rows (ties
    to the smaller index) and its output stays finite; a NaN index key: that row ranks last for
    everyone, selected only by queries that see no more than K rows."""
    spec, clean, inp = poisoned("idx_q", (0, 30, 2, 5), float("nan"))
    out, keys = run(spec, inp, path, backend)
    W, K = spec.attention.window, spec.topk_eff(S)
    sel = keys[0, 30, W:]
    nvis = (30 + 1) // spec.ratio
    assert sorted(sel.tolist()) == [S + t for t in range(min(K, nvis))]
    assert torch.isfinite(out.float()).all()

    # token 13 is in block 3; its channels [0, D) feed the next row's "previous block" slots: row 4
    spec, clean, inp = poisoned("idx_kv", (0, 13, 0), float("nan"))
    out, keys = run(spec, inp, path, backend)
    from kernels_triton.compressor import naive as comp
    from pipeline.stages.compressor import params, rotary
    ic = spec.indexer.compressor
    cos, sin = cos_sin(rotary(ic.rope), torch.arange(S))
    k_idx = comp.compress(inp["idx_kv"], inp["idx_gate"], inp["idx_ape"], inp["idx_norm"], **params(ic), cos=cos,
                          sin=sin)
    bad = torch.isnan(k_idx[0]).any(-1).nonzero()[:, 0].tolist()
    assert bad == [4]
    for s in range(S):
        nv = (s + 1) // spec.ratio
        picked = [t - S for t in keys[0, s, W:].tolist() if t >= 0]
        if nv > K:
            assert not set(picked) & set(bad), s
        sc = ix_ref.indexer_scores(inp["idx_q"][:, s:s + 1], inp["idx_w"][:, s:s + 1], k_idx)[0, 0, :nv]
        exp = ix_ref.topk_select(sc[None, None], torch.tensor([s]), spec.ratio, K)[0, 0]
        assert sorted(picked) == sorted(t for t in exp.tolist() if t >= 0)
    assert torch.isfinite(out.float()).all()


def test_reference_attention_empty_rows_and_minus_inf_sink():
    """No valid key: zeros (never NaN), also with a -inf sink; the LSE is then the sink (or -inf)."""
    q = torch.randn(1, 3, 2, 16).bfloat16()
    kv = torch.randn(1, 5, 16).bfloat16()
    keys = torch.tensor([[[-1, -1], [0, -1], [-1, -1]]], dtype=torch.int32)
    sink = torch.tensor([0.5, float("-inf")])
    out, lse = att_ref.sparse_attention(q, kv, keys, 0.25, 16, sink, return_lse=True)
    assert torch.equal(out[0, 0], torch.zeros(2, 16)) and torch.equal(out[0, 2], torch.zeros(2, 16))
    assert lse[0, 0, 0] == 0.5 and lse[0, 0, 1] == float("-inf")
    assert torch.isfinite(out).all()


def test_input_check_names_the_tensor_and_position():
    spec, clean, inp = poisoned("kv", (0, 10, 7), float("nan"))
    inp["kv"][0, 12, 1] = float("inf")
    fwd = csa_dsl.compile(spec, "cpu", Schedule(check_inputs=True))
    with pytest.raises(InputError, match=r"input 'kv' has 2 non-finite value\(s\); the first is nan at \[0, 10, 7\]"
                                         r".*check_inputs=False"):
        fwd(**inp)
    spec, clean, inp = poisoned("cmp_gate", (0, 9, 3), float("-inf"))
    with pytest.raises(InputError, match=r"input 'cmp_gate' has 1 non-finite value\(s\); the first is -inf at "
                                         r"\[0, 9, 3\]"):
        csa_dsl.check_finite(inp)
    csa_dsl.check_finite(clean)                       # a clean set passes
    out = csa_dsl.compile(spec, "cpu", Schedule(check_inputs=True))(**clean)
    assert torch.isfinite(out.float()).all()


def test_input_check_is_slab_wise(monkeypatch):
    """The scan holds a bounded slab at a time and still finds a value far in."""
    from pipeline import inputs as inputs_mod
    monkeypatch.setattr(inputs_mod, "_SLAB", 1000)
    t = torch.zeros(7, 1000)
    t[6, 999] = float("nan")
    with pytest.raises(InputError, match=r"'x' has 1 non-finite value\(s\); the first is nan at \[6, 999\]"):
        inputs_mod.check_finite({"x": t, "ids": torch.zeros(3, dtype=torch.int32)})
