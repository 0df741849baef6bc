"""The composed CUDA forward against the reference stages (GPU)."""
import dataclasses

import pytest
import torch

import csa_dsl
from kernels_tilelang.sparse_mla import naive as att_ref
from kernels_triton.compressor import kernel as comp_kernel
from kernels_triton.compressor import naive as comp_ref
from kernels_triton.indexer import naive as ix_ref
from kernels_triton.rope import naive as rope_ref
from kernels_triton.rope.tables import cos_sin
from pipeline import planner
from pipeline.metrics import rel_err, tie_aware_recall
from kernels_triton.quant.naive import quant_dequant
from pipeline.stages.compressor import params, role_quant, rotary
from test_quant_gpu import FP8_MMA_BOUND

pytestmark = pytest.mark.gpu


def _compress(fn, inp, role, c, quant=None):
    S = inp["q"].shape[1]
    cos, sin = (t.contiguous() for t in cos_sin(rotary(c.rope), torch.arange(S, device=inp["q"].device)))
    return fn(inp[f"{role}_kv"], inp[f"{role}_gate"], inp[f"{role}_ape"], inp[f"{role}_norm"], **params(c),
              cos=cos, sin=sin, **(quant or {}))


def _spec(name: str):
    """A preset, or with ':bf16-scores' the preset with the official V4 code's bf16 index score, with ':fp8-mma' its
    e4m3 index operands on FP8 tensor cores (Indexer.fp8_mma)."""
    base, _, variant = name.partition(":")
    spec = csa_dsl.preset(base)
    change = {"": {}, "bf16-scores": {"score_rounding": "bf16"}, "fp8-mma": {"fp8_mma": True}}[variant]
    return spec.replace(indexer=dataclasses.replace(spec.indexer, **change)) if change else spec


@pytest.mark.parametrize("name", ["v4-flash", "v4-flash-bf16", "v3.2", "v3.2-bf16", "v4-flash:bf16-scores",
                                  "v3.2:fp8-mma"])
def test_composed_vs_reference_16k(name, fresh_seed):
    """With the quantisation steps on (the model presets) and off (-bf16), and with the bf16 index score: the
    selection has recall 1.0 against the exact scores of the operands the pipeline used (the bf16 score's
    within one bf16 ulp: its fp32 sums add in another order than torch's; V3.2's on FP8 tensor cores within
    test_quant_gpu.FP8_MMA_BOUND of the row's largest), the output matches the reference attention over the
    kernel's own lists."""
    spec = _spec(name)
    round_bf16 = spec.indexer.score_rounding == "bf16"
    tol = {"rel_tol": 2.0 ** -7} if round_bf16 else {"rel_tol": FP8_MMA_BOUND} if spec.indexer.fp8_mma else {}
    S = 16384
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=fresh_seed)
    out, idx = csa_dsl.compile(spec, "cuda")(**inp, return_indices=True)
    assert not torch.isnan(out.float()).any()
    W, a = spec.attention.window, spec.attention
    # Recall is measured on the index keys the pipeline used (the Triton compressor's, within a
    # bf16 ulp of the reference compressor, checked here too): a one-ulp key difference moves
    # scores by ~1e-3 and may legitimately reorder near-ties at the top-k boundary.
    # the quantisation steps (identity for the -bf16 presets)
    iq, kq = spec.indexer.quant, a.kv_quant
    xq = (lambda x: quant_dequant(x, iq.format, iq.block)) if iq else (lambda x: x)
    rq = (lambda x: quant_dequant(x, kq.format, kq.block, a.kv_quant_channels)) if kq else (lambda x: x)
    if spec.compressor is not None:
        ic = spec.indexer.compressor
        k_idx = _compress(comp_kernel.compress, inp, "idx", ic, role_quant(spec, "idx"))
        assert rel_err(k_idx, _compress(comp_ref.compress, inp, "idx", ic, role_quant(spec, "idx"))) < 2e-2
        ckv = _compress(comp_kernel.compress, inp, "cmp", spec.compressor, role_quant(spec, "cmp"))
        assert rel_err(ckv, _compress(comp_ref.compress, inp, "cmp", spec.compressor, role_quant(spec, "cmp"))) < 2e-2
        rows = torch.cat([rq(inp["kv"]), ckv], dim=1)
    else:
        k_idx, rows = xq(inp["idx_k"]), rq(inp["kv"])
    sink = inp.get("sink")
    for s0 in (0, 4096, S - 256):
        s1 = s0 + 256
        pos = torch.arange(s0, s1, device="cuda")
        exact = ix_ref.mask_invisible(ix_ref.indexer_scores(xq(inp["idx_q"][:, s0:s1]), inp["idx_w"][:, s0:s1],
                                                            k_idx, round_bf16)[0], pos, spec.ratio)
        sel = idx[0, s0:s1, W:]
        sel = torch.where(sel >= 0, sel - spec.selected_offset(S), sel)
        rec, det = tie_aware_recall(sel, exact, spec.topk_eff(S), **tol)
        assert rec == 1.0 and det["duplicates"] == 0 and det["wrong_padding_rows"] == 0, (det, fresh_seed)
        if W:
            assert torch.equal(idx[0, s0:s1, :W], ix_ref.window_indices(pos, W))
        # attention on the kernel's own key lists (ties may pick different equal-score rows)
        att = att_ref.sparse_attention(inp["q"][:, s0:s1], rows, idx[:, s0:s1], a.softmax_scale, a.v_dim, sink)
        exp = att.to(torch.bfloat16)
        if a.inverse_rope is not None:
            exp = rope_ref.rope_rows_bf16(exp, rotary(a.inverse_rope), pos, inverse=True, heads=True)
        assert rel_err(out[:, s0:s1], exp) <= 1e-2, fresh_seed


def test_composed_262k_memory():
    """v4-flash at S = 262,144 completes with peak memory above inputs + output <= 2 GiB, and within
    what the plan printed; a second call is planned like the first (nothing pinned between calls)."""
    spec = csa_dsl.preset("v4-flash")
    S = 262144
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=1)
    fwd = csa_dsl.compile(spec, "cuda")
    plan = fwd.plan(S)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fwd(**inp)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base - planner.output_bytes(spec, 1, S)
    assert peak <= 2 * 2**30, peak / 2**30
    assert peak <= plan.peak_bytes + 64 * 2**20, (peak, plan.peak_bytes)
    assert not torch.isnan(out[0, -4096:].float()).any()
    assert out.float()[0, -1].abs().sum() > 0
    del out
    again = fwd.plan(S)
    assert again.chunk == plan.chunk and abs(again.budget - plan.budget) < 2 * 2**30


def test_composed_nonfinite_inputs(fresh_seed):
    """A NaN kv row and a NaN sink through the whole CUDA program: exactly the (query, head) pairs the
    formula makes NaN are NaN (a row: every query whose key list holds it; a sink: its head)."""
    spec = csa_dsl.preset("v4-flash")
    S = 8192
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=fresh_seed)
    inp["kv"][0, 5000, 3] = float("nan")
    inp["sink"][3] = float("nan")
    out, idx = csa_dsl.compile(spec, "cuda")(**inp, return_indices=True)
    nan = torch.isnan(out[0].float()).any(-1)                     # [S, H]
    holds = (idx[0] == 5000).any(-1)
    assert holds.sum() >= spec.attention.window
    expect = holds[:, None].expand_as(nan).clone()
    expect[:, 3] = True
    assert torch.equal(nan, expect)
    with pytest.raises(csa_dsl.InputError, match=r"input 'kv' has 1 non-finite value\(s\); the first is nan at "
                                                 r"\[0, 5000, 3\]"):
        csa_dsl.compile(spec, "cuda", csa_dsl.Schedule(check_inputs=True))(**inp)


def test_v4_pro_262k_twice_holding_the_first_output():
    """The first-run report: a second call of the same compiled v4-pro at S = 262,144, with the caller
    still holding the first 32 GiB output, must plan and run (nothing is pinned by the pipeline, and
    the allocator's cached blocks count as available)."""
    spec = csa_dsl.preset("v4-pro")
    S = 262144
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=2)
    fwd = csa_dsl.compile(spec, "cuda")
    first = fwd(**inp)
    second = fwd(**inp)
    torch.cuda.synchronize()
    assert torch.equal(first[0, -64:], second[0, -64:])
    assert not torch.isnan(second[0, -2048:].float()).any()


@pytest.mark.parametrize("name", ["v4-flash", "v3.2", "v4-flash-selfindex"])
def test_score_overlap_on_two_streams_changes_nothing(name, fresh_seed):
    """Schedule.overlap runs the scores on a side stream into a ring of two buffers: three runs of it give
    exactly the one-stream forward's outputs, padded and packed (a missing wait would read a slot the
    next chunk's scores are overwriting; 8 chunks each)."""
    spec = csa_dsl.preset(name)
    S = 16384
    on = csa_dsl.compile(spec, "cuda", schedule=csa_dsl.Schedule(query_chunk=2048))
    off = csa_dsl.compile(spec, "cuda", schedule=csa_dsl.Schedule(query_chunk=2048, overlap=False))
    assert on.plan(S).streams == ("score",) and not off.plan(S).streams
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=fresh_seed)
    want = off(return_indices=True, **inp)
    for _ in range(3):
        got = on(return_indices=True, **inp)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    cu, packed = csa_dsl.random_packed_inputs(spec, [7000, 1, 9383], "cuda", seed=fresh_seed)
    want = off.varlen(cu, max_seqlen=9383, return_indices=True, **packed)
    got = on.varlen(cu, max_seqlen=9383, return_indices=True, **packed)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
