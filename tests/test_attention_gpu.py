"""GPU tests of the TileLang sparse MLA forward against a float64 gather reference.

Run on an H100/H200: python -m pytest -q -m gpu tests/test_attention_gpu.py
Every case runs both kernel variants ("ws" and "pipelined")."""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (sm_90)"),
]

VARIANTS = ["ws", "seesaw", "pipelined"]
V32_SCALE = 192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2


def ref_sparse_mla(q, kv, indices, sm_scale, dim_v, sink=None, chunk=8):
    """Plain gather + softmax in float64. Returns (out fp64 [B,Sq,H,dv], lse fp64 [B,Sq,H])."""
    B, Sq, H, D = q.shape
    R = kv.shape[1]
    outs, lses = [], []
    for s0 in range(0, Sq, chunk):
        qi = q[:, s0:s0 + chunk].double()
        ii = indices[:, s0:s0 + chunk].long()
        valid = (ii >= 0) & (ii < R)
        rows = torch.gather(kv, 1, ii.clamp(0, R - 1).reshape(B, -1, 1).expand(-1, -1, D))
        rows = rows.double().reshape(B, ii.shape[1], ii.shape[2], D)
        logits = torch.einsum("bshd,bsnd->bshn", qi, rows) * sm_scale
        logits = logits.masked_fill(~valid[:, :, None, :], float("-inf"))
        if sink is not None:
            sk = sink.double().view(1, 1, H, 1).expand(B, qi.shape[1], H, 1)
            logits = torch.cat([logits, sk], dim=-1)
        m = logits.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(logits - m)
        den = p.sum(-1)
        pv = p[..., : ii.shape[2]]
        o = torch.einsum("bshn,bsnd->bshd", pv, rows[..., :dim_v])
        o = torch.where(den[..., None] > 0, o / den[..., None].clamp_min(1e-300), torch.zeros_like(o))
        outs.append(o)
        lses.append(torch.log(den) + m[..., 0])
    return torch.cat(outs, 1), torch.cat(lses, 1)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_inputs(B, Sq, H, D, R, NI, sink, hole_frac=0.2, empty_rows=(), near_end=False,
                dev="cuda"):
    q = (torch.randn(B, Sq, H, D, device=dev) * 0.5).to(torch.bfloat16)
    kv = (torch.randn(B, R, D, device=dev) * 0.5).to(torch.bfloat16)
    lo = max(0, R - 4 * NI) if near_end else 0
    if NI > R - lo:
        raise ValueError("test needs R >= NI")
    # distinct ids per query (like a top-k list), then random -1 holes
    idx = torch.stack([torch.stack([torch.randperm(R - lo, device=dev)[:NI] + lo
                                    for _ in range(Sq)]) for _ in range(B)]).to(torch.int32)
    holes = torch.rand(B, Sq, NI, device=dev) < hole_frac
    idx = idx.masked_fill(holes, -1)
    for (b, s) in empty_rows:
        idx[b, s] = -1
    snk = (torch.randn(H, device=dev) * 2).float() if sink else None
    return q, kv, idx.contiguous(), snk


# shape classes the tests use (heads, dim_qk, dim_v, NI, sink, lse): compiled up front in
# parallel processes (~1 min on 16 cores instead of ~5 min serially)
CLASSES = [
    (64, 512, 512, 640, True, True), (64, 512, 512, 640, True, False),
    (128, 512, 512, 1152, True, True), (128, 512, 512, 1152, True, False),
    (128, 576, 512, 2048, False, True), (128, 576, 512, 2048, False, False),
    (64, 576, 512, 128, True, True), (64, 512, 512, 128, True, True),
    (64, 576, 512, 256, False, True), (64, 576, 512, 256, True, True),
    (128, 576, 512, 256, True, True), (128, 576, 512, 256, True, False),
    (64, 576, 512, 128, True, False),
]


@pytest.fixture(scope="module", autouse=True)
def _precompile():
    from kernels_tilelang.sparse_mla.kernel import precompile

    # errors resurface in the test that needs the kernel
    precompile(CLASSES, ("ws", "pipelined", "seesaw"))
    precompile([(128, 512, 512, 256, True, True)], ("seesaw",))
    yield


@pytest.fixture(autouse=True)
def _hang_guard():
    """A deadlocked kernel would block torch.cuda.synchronize forever: dump the stacks and
    exit after 240 s instead, so the run ends with a message rather than at a time limit."""
    import faulthandler

    faulthandler.dump_traceback_later(240, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def check(q, kv, idx, scale, dv, snk, variant, tol=1e-2, also_no_lse=False):
    from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd


    out, lse = sparse_mla_fwd(q, kv, idx, scale, dv, sink=snk, return_lse=True, variant=variant)
    torch.cuda.synchronize()
    assert out.shape == (*q.shape[:3], dv) and out.dtype == torch.bfloat16
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert not torch.isnan(out).any(), "NaN in out"
    assert not torch.isnan(lse).any(), "NaN in lse"
    ref_o, ref_l = ref_sparse_mla(q, kv, idx, scale, dv, snk)
    e = rel_err(out, ref_o)
    assert e <= tol, f"out rel err {e:.3e} > {tol}"
    fin = torch.isfinite(ref_l)
    assert torch.equal(torch.isfinite(lse), fin), "LSE -inf pattern differs"
    assert (lse[~fin] == float("-inf")).all()
    if fin.any():
        el = rel_err(lse[fin], ref_l[fin])
        assert el <= 1e-3, f"lse rel err {el:.3e}"
    if also_no_lse:  # the no-LSE kernel is a different compiled class
        out2 = sparse_mla_fwd(q, kv, idx, scale, dv, sink=snk, return_lse=False, variant=variant)
        assert not torch.isnan(out2).any()
        assert rel_err(out2, ref_o) <= tol
    return out, lse


@pytest.mark.parametrize("variant", VARIANTS)
def test_v4_flash(variant):
    q, kv, idx, snk = make_inputs(1, 24, 64, 512, 4096, 640, True, empty_rows=[(0, 3)])
    out, lse = check(q, kv, idx, 512 ** -0.5, 512, snk, variant, also_no_lse=True)
    assert (out[0, 3] == 0).all()
    assert torch.allclose(lse[0, 3], snk, rtol=0, atol=1e-5)  # only the sink is left


@pytest.mark.parametrize("variant", VARIANTS)
def test_v4_pro(variant):
    q, kv, idx, snk = make_inputs(1, 16, 128, 512, 4096, 1152, True, empty_rows=[(0, 0)])
    check(q, kv, idx, 512 ** -0.5, 512, snk, variant, also_no_lse=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_v32(variant):
    q, kv, idx, snk = make_inputs(1, 16, 128, 576, 8192, 2048, False, hole_frac=0.05,
                                  empty_rows=[(0, 5)])
    out, lse = check(q, kv, idx, V32_SCALE, 512, None, variant, also_no_lse=True)
    assert (out[0, 5] == 0).all() and torch.isinf(lse[0, 5]).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("H,D,NI", [(16, 576, 100), (32, 512, 77), (16, 512, 1)])
def test_padded_heads_and_indices(variant, H, D, NI):
    q, kv, idx, snk = make_inputs(1, 9, H, D, 512, NI, True, hole_frac=0.3)
    check(q, kv, idx, D ** -0.5, 512, snk, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch2_no_sink_and_dim_v_slice(variant):
    q, kv, idx, _ = make_inputs(2, 12, 64, 576, 1024, 200, False, empty_rows=[(1, 7)])
    check(q, kv, idx, V32_SCALE, 512, None, variant)
    check(q, kv, idx, V32_SCALE, 256, None, variant)  # dim_v < 512 is a slice


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_kv_offsets(variant):
    # 300,000 rows x 576: row ids near the end push row*D past 1.7e8; batch 2 doubles it
    q, kv, idx, snk = make_inputs(2, 8, 64, 576, 300_000, 256, True, near_end=True)
    check(q, kv, idx, V32_SCALE, 512, snk, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_extreme_sink_does_not_overflow(variant):
    from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd

    q, kv, idx, _ = make_inputs(1, 8, 64, 512, 1024, 128, True, empty_rows=[(0, 2)])
    # -200: the sink vanishes (plain softmax); +200: it dominates, out ~ e^-200 -> 0
    check(q, kv, idx, 512 ** -0.5, 512, torch.full((64,), -200.0, device="cuda"), variant)
    snk = torch.full((64,), 200.0, device="cuda")
    out, lse = sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=snk, return_lse=True,
                              variant=variant)
    ref_o, ref_l = ref_sparse_mla(q, kv, idx, 512 ** -0.5, 512, snk)
    assert torch.isfinite(out.float()).all() and torch.isfinite(lse).all()
    assert out.float().abs().max().item() < 1e-6
    assert rel_err(lse, ref_l) <= 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_element_written(variant):
    """Poison the outputs: the kernel (not a pre-fill) must write every element."""
    from kernels_tilelang.sparse_mla.kernel import get_kernel

    B, Sq, H, D, R, NI = 2, 10, 128, 576, 2048, 256
    q, kv, idx, snk = make_inputs(B, Sq, H, D, R, NI, True, empty_rows=[(0, 1), (1, 9)])
    kern = get_kernel(H, D, 512, NI, True, True, variant)
    out = torch.full((B, Sq, H, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((B, Sq, H), float("nan"), dtype=torch.float32, device="cuda")
    no_tables = [torch.empty((1, 1), device="cuda")] * 2 + [torch.empty((1, 4), dtype=torch.int32, device="cuda")]
    kern(q, kv, idx, snk, out, lse, *no_tables, float(D ** -0.5), 0, NI, 0, 1, 1)   # bound (NI, 0, 1), span 1
    torch.cuda.synchronize()
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    ref_o, ref_l = ref_sparse_mla(q, kv, idx, D ** -0.5, 512, snk)
    assert rel_err(out, ref_o) <= 1e-2
    # through the wrapper: a poisoned out= buffer, and a NaN-poisoned caching allocator
    from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd

    o1 = torch.full((B, Sq, H, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    r1 = sparse_mla_fwd(q, kv, idx, D ** -0.5, 512, sink=snk, variant=variant, out=o1)
    assert r1 is o1 and not torch.isnan(o1).any() and rel_err(o1, ref_o) <= 1e-2
    junk = torch.full((B * Sq * H * 512 * 2,), float("nan"), dtype=torch.bfloat16, device="cuda")
    del junk
    o2 = sparse_mla_fwd(q, kv, idx, D ** -0.5, 512, sink=snk, variant=variant)
    assert not torch.isnan(o2).any()
    # padded heads through out=: the kernel writes a temporary, the wrapper copies the slice
    q16, kv16, idx16, s16 = make_inputs(1, 5, 16, D, 300, 100, True)
    o3 = torch.full((1, 5, 16, 512), float("nan"), dtype=torch.bfloat16, device="cuda")
    sparse_mla_fwd(q16, kv16, idx16, D ** -0.5, 512, sink=s16, variant=variant, out=o3)
    assert rel_err(o3, ref_sparse_mla(q16, kv16, idx16, D ** -0.5, 512, s16)[0]) <= 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_fresh_inputs_repeat(variant):
    """Two different random draws through the same cached kernel (no stale state)."""
    for _ in range(2):
        q, kv, idx, snk = make_inputs(1, 6, 64, 512, 900, 640, True)
        check(q, kv, idx, 512 ** -0.5, 512, snk, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nonfinite_inputs_propagate_as_the_reference(variant):
    """docs/semantics.md section 9 on the kernel: the NaN pattern of the output equals the reference's
    (kernels_tilelang/sparse_mla/naive.py, the dense formula), and the finite part agrees."""
    from kernels_tilelang.sparse_mla import naive
    from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd

    q, kv, idx, snk = make_inputs(1, 32, 64, 512, 1024, 640, True, hole_frac=0.2, empty_rows=[(0, 4)])
    nan, inf = float("nan"), float("inf")
    r1 = int(idx[0, 7][idx[0, 7] >= 0][3])          # a row query 7 lists: every query listing it
    kv[0, r1, 11] = nan
    r2 = int(idx[0, 9][idx[0, 9] >= 0][5])
    kv[0, r2, 500] = inf
    snk[5], snk[6], snk[7] = nan, inf, -inf        # head 5 and 6 NaN everywhere; head 7 plain softmax
    q[0, 20, 9, 0] = nan                            # (query 20, head 9), which has valid keys
    out = sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=snk, variant=variant)
    ref = naive.sparse_attention(q, kv, idx, 512 ** -0.5, 512, snk)
    torch.cuda.synchronize()
    got_nan, ref_nan = torch.isnan(out.float()), torch.isnan(ref)
    assert torch.equal(got_nan, ref_nan), (int(got_nan.sum()), int(ref_nan.sum()))
    assert ref_nan[0, :, 5].all() and ref_nan[0, :, 6].all() and ref_nan[0, 20, 9].all()
    assert (out[0, 4, 7] == 0).all()                # no valid key and a -inf sink: zeros
    fin = ~ref_nan
    assert torch.isfinite(out.float()[fin]).all()
    assert rel_err(out.float()[fin], ref[fin]) <= 1e-2


@pytest.mark.parametrize("variant", ["ws", "seesaw"])
@pytest.mark.parametrize("H", [64, 128])
def test_fused_inverse_rope_equals_the_rope_kernel_after(H, variant, fresh_seed):
    """The ws and seesaw kernels' fused inverse RoPE gives the bits of the attention followed by kernels_triton's RoPE
    kernel: full lists, the causal bound, the implicit window (pos0 > 0), a packed batch's positions, a
    dim_v whose rotated channels the kernel cannot fuse (the wrapper runs the RoPE kernel after it), and
    a NaN-poisoned out= (every element written)."""
    from kernels_tilelang.sparse_mla.kernel import NO_ROPE, precompile, sparse_mla_fwd
    from kernels_triton.rope.kernel import apply_rope_
    from kernels_triton.rope.tables import Rotary, fill_tables

    # the classes below, compiled in parallel processes first (one at a time they take minutes)
    rope, packed = (448, 64, False), (448, 64, True)
    precompile([(H, 512, 512, 640, True, False, r) for r in (NO_ROPE, rope, packed)], (variant,))
    precompile([(H, 512, 512, 640, True, False, r) for r in (NO_ROPE, rope)], (f"{variant}-bounded",))
    precompile([(H, 512, 512, 128, True, False, r) for r in (NO_ROPE, rope)], (f"{variant}-window",))
    P = 4096
    cos = torch.empty(P, 32, device="cuda")
    sin = torch.empty_like(cos)
    fill_tables(cos, sin, rot=Rotary(dim=64, base=160000.0, factor=16.0, original_seq_len=65536))
    q, kv, idx, snk = make_inputs(1, 96, H, 512, 1500, 640, True)
    sc = 512 ** -0.5
    pos0 = 700
    # a packed batch's positions: three sequences of 40, 30 and 26 tokens, each from 0
    seg = torch.zeros(96, 4, dtype=torch.int32, device="cuda")
    seg[:, 0] = torch.cat([torch.arange(40), torch.arange(30), torch.arange(26)]).to(torch.int32)
    cases = {
        "full lists": dict(indices=idx),
        "causal bound": dict(indices=torch.where(torch.arange(640, device="cuda") < 128 + 3, idx, -1).int(),
                             window=128, causal_bound=(512, 4)),
        "implicit window": dict(indices=None, window=128),
        "packed positions": dict(indices=idx, seg=seg),
    }
    for name, c in cases.items():
        seg_c = c.pop("seg", None)
        indices = c.pop("indices")
        plain = sparse_mla_fwd(q, kv, indices, sc, 512, sink=snk, pos0=pos0, variant=variant, **c)
        expected = apply_rope_(plain.clone()[0] if seg_c is not None else plain.clone(), cos, sin,
                               0 if seg_c is not None else pos0, seg=seg_c)
        out = torch.full_like(plain, float("nan"))
        sparse_mla_fwd(q, kv, indices, sc, 512, sink=snk, pos0=pos0, out=out, rope_cos=cos, rope_sin=sin,
                       rope_seg=seg_c, variant=variant, **c)
        torch.cuda.synchronize()
        assert torch.equal(out.view_as(expected), expected), (name, fresh_seed)
        assert not torch.equal(out, plain), name
    # dim_v 300: the channels [236, 300) are not in the second value half, the RoPE kernel runs after
    plain = sparse_mla_fwd(q, kv, idx, sc, 300, sink=snk, pos0=pos0, variant=variant)
    fused = sparse_mla_fwd(q, kv, idx, sc, 300, sink=snk, pos0=pos0, rope_cos=cos, rope_sin=sin, variant=variant)
    assert torch.equal(fused, apply_rope_(plain.clone(), cos, sin, pos0)), fresh_seed
