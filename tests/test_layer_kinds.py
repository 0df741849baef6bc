"""The layer kinds beyond CSA/DSA (docs/semantics.md section 6) as the registry builds them: spec rules,
presets and a model's layers, the HCA key-list kernel against its reference, the attention's causal
bound (checked by the reference), the window-only kernel variant's lowering, and the CLI."""
import dataclasses

import pytest
import torch

import csa_dsl
from csa_dsl import Compressor, Indexer, Pipeline, RoPE, SelfIndex, SparseAttention, SpecError
from csa_dsl.cli import main
from kernels_tilelang.sparse_mla import naive as att_naive
from kernels_tilelang.sparse_mla.ir import lower_sparse_mla_fwd
from kernels_triton.compressor import naive as comp_naive
from kernels_triton.hca import kernel as hca_kernel
from kernels_triton.hca import naive as hca_naive
from kernels_triton.indexer import naive as ix_naive
from kernels_triton.rope.tables import cos_sin
from kernels_triton.selfindex import kernel as si_kernel
from kernels_triton.selfindex import naive as si_naive
from pipeline.context_parallel import compose_rank
from pipeline.metrics import tie_aware_recall
from pipeline.stages import KINDS, stages_of, unsupported
from pipeline.stages.compressor import params, rotary


def test_layer_of_each_preset():
    want = {"v4-flash": "csa", "v4-pro": "csa", "v3.2": "dsa", "v4-flash-hca": "hca", "v4-pro-hca": "hca",
            "v4-window": "window", "v4-flash-selfindex": "csa"}
    assert {n: csa_dsl.preset(n).layer for n in want} == want
    hca = csa_dsl.preset("v4-flash-hca")
    assert hca.compressor.ratio == 128 and not hca.compressor.overlap and hca.indexer is None
    assert hca.num_compressed(262144) == 2048 and hca.index_width(262144) == 2176
    win = csa_dsl.preset("v4-window")
    assert win.compressor is None and win.num_compressed(262144) == 0 and win.index_width(262144) == 128
    assert win.attention.inverse_rope.yarn is None and win.attention.inverse_rope.base == 10000.0
    assert "WINDOW layer" in str(win) and "every visible compressed row" in str(hca)
    for n in want:   # the dict round trip keeps indexer=None
        assert Pipeline.from_json(csa_dsl.preset(n).to_json()) == csa_dsl.preset(n)


def test_stages_of_each_layer_kind():
    assert [r for r, _, _ in stages_of(csa_dsl.preset("v4-flash-hca"))] == ["attention", "cmp", "hca"]
    assert [r for r, _, _ in stages_of(csa_dsl.preset("v4-window"))] == ["attention"]
    assert set(csa_dsl.input_signature(csa_dsl.preset("v4-window"), 1, 8)) == {"q", "kv", "sink"}
    assert set(csa_dsl.input_signature(csa_dsl.preset("v4-flash-hca"), 1, 256)) == {
        "q", "kv", "sink", "cmp_kv", "cmp_gate", "cmp_ape", "cmp_norm"}
    assert KINDS["hca"].ops["keys"].name == "hca.keys"
    assert [r for r, _, _ in stages_of(csa_dsl.preset("v4-flash-selfindex"))] == ["attention", "cmp", "selfindex"]
    assert set(csa_dsl.input_signature(csa_dsl.preset("v4-flash-selfindex"), 1, 256)) == {
        "q", "kv", "sink", "cmp_kv", "cmp_gate", "cmp_ape", "cmp_norm"}      # no indexer inputs


def test_spec_errors_say_how_to_fix():
    with pytest.raises(SpecError, match=r"window-only layer, but SparseAttention.window = 0.*set window >= 1"):
        Pipeline(attention=SparseAttention(window=0))
    with pytest.raises(SpecError, match=r"indexer=None to attend every compressed row \(HCA\)"):
        Pipeline(attention=SparseAttention(), compressor=Compressor(ratio=128, dim=512, overlap=False),
                 indexer=Indexer())
    with pytest.raises(SpecError, match=r"Pipeline.indexer must be an Indexer, a SelfIndex or None"):
        Pipeline(attention=SparseAttention(), indexer="lightning")
    with pytest.raises(SpecError, match=r"SelfIndex packs the sign of every key channel, 32 per word"):
        Pipeline(attention=SparseAttention(qk_dim=48, v_dim=48, window=0, inverse_rope=None), indexer=SelfIndex())
    with pytest.raises(SpecError, match="context parallelism shards layers with a lightning indexer"):
        compose_rank(csa_dsl.preset("v4-flash-hca"), 1, 4096, 2, 0, "torch")


def test_model_layers():
    layers = csa_dsl.model_layers("v4-flash")
    kinds = [p.layer for p in layers]
    assert len(layers) == 43 and kinds.count("csa") == 20 and kinds.count("hca") == 20 and kinds.count("window") == 3
    assert [p.name for p in csa_dsl.model_layers("v4-flash", [4, 128, 0])] == ["v4-flash", "v4-flash-hca", "v4-window"]
    with pytest.raises(SpecError, match=r"compress_ratios of v4-flash must be a non-empty list of \[0, 4, 128\], got \[64\]"):
        csa_dsl.model_layers("v4-flash", [4, 64])
    with pytest.raises(SpecError, match="model_layers knows"):
        csa_dsl.model_layers("v9")


@pytest.mark.interpret
@pytest.mark.parametrize("s_first,n,ratio,window,rows,offset", [(0, 40, 8, 6, 5, 45), (300, 37, 128, 128, 3, 512),
                                                                 (10, 9, 4, 0, 7, 0), (0, 3, 128, 128, 0, 0)])
def test_hca_keys_kernel_matches_reference(s_first, n, ratio, window, rows, offset):
    """The Triton key lists (interpreter) bit-exact against naive.py, written into a wider buffer."""
    want = torch.full((n, window + rows + 3), -7, dtype=torch.int32)
    got = want.clone()
    hca_naive.keys_chunk(want[:, :window + rows], s_first=s_first, ratio=ratio, rows=rows, idx_offset=offset,
                         window=window)
    hca_kernel.keys_chunk(got, s_first=s_first, ratio=ratio, rows=rows, idx_offset=offset, window=window)
    assert torch.equal(got[:, :window + rows], want[:, :window + rows])
    assert got[:, window + rows:].eq(-7).all()        # nothing past the list is written
    s = s_first + n - 1                               # the last query sees min(rows, (s+1)//m) rows, in order
    vis = min(rows, (s + 1) // ratio)
    assert got[-1, window:window + vis].tolist() == [offset + t for t in range(vis)]


def test_reference_attention_checks_the_causal_bound():
    """The bound is a promise the kernel's block skipping relies on: the reference refuses a list that
    breaks it (so a composer bug fails on the CPU too)."""
    q = torch.randn(4, 2, 16).bfloat16()
    kv = torch.randn(20, 16).bfloat16()
    out = torch.empty(4, 2, 16, dtype=torch.bfloat16)
    keys = torch.tensor([[0, -1, 10, -1], [0, 1, 10, -1], [1, 2, 10, 11], [2, 3, 10, 11]], dtype=torch.int32)
    att_naive.attend(q, kv, keys, out, scale=0.25, v_dim=16, pos0=6, window=2, causal_bound=(2, 4))
    with pytest.raises(ValueError, match="break the causal bound"):     # query 5 sees one row, lists two
        att_naive.attend(q, kv, keys, out, scale=0.25, v_dim=16, pos0=3, window=2, causal_bound=(2, 4))


def test_window_kernel_variant_lowers_without_a_key_list():
    cuda = lower_sparse_mla_fwd(64, 512, 512, 128, True, variant="ws-window")["cuda"]
    assert "wgmma" in cuda and "Indices" not in cuda and "bound_w" in cuda


def test_cli_new_kinds(capsys):
    rc = main(["ir", "v4-flash-hca", "--level", "plan", "--seq", "262144"])
    out = capsys.readouterr().out
    assert rc == 0 and "hca.keys@cuda" in out and "keys[2048x2176] i32" in out and "indexer" not in out.split(
        "loop nest:")[1].split("fused")[0]
    rc = main(["ir", "v4-window", "--level", "plan", "--seq", "262144"])
    out = capsys.readouterr().out
    assert rc == 0 and "no key list" in out and "keys[" not in out
    rc = main(["run", "v4-window", "--seq", "200", "--reps", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "NaN 0" in out, out


# ---------------------------------------------------------------------------------------
# the 1-bit self-index (docs/semantics.md section 7)
def test_selfindex_codes_bit_exact_against_a_plain_loop():
    """sign(0) = +1 (both zeros), NaN is not >= 0; channel d is bit d % 32 of word d // 32, LSB first."""
    g = torch.Generator().manual_seed(11)
    rows = torch.randn(1, 3, 64, generator=g).bfloat16()
    rows[0, 0, :4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30]).bfloat16()
    rows[0, 1, 33] = float("nan")
    codes = torch.empty(1, 3, 2, dtype=torch.int32)
    alpha = torch.empty(1, 3)
    si_naive.codes(rows, codes, alpha)
    for t in range(3):
        for w in range(2):
            word = sum(1 << b for b in range(32) if not (float(rows[0, t, 32 * w + b]) < 0)
                       and float(rows[0, t, 32 * w + b]) == float(rows[0, t, 32 * w + b]))
            assert int(codes[0, t, w]) & 0xFFFFFFFF == word, (t, w)
    assert int(codes[0, 0, 0]) & 0xF == 0b0111      # +0, -0, tiny positive -> +1 (bits 0-2); tiny negative -> -1
    assert torch.allclose(alpha[0, 2], rows[0, 2].float().abs().mean())


def test_selfindex_score_dim_limit_is_said_before_a_launch():
    """Rows over 512 channels do not fit the GPU score kernel: compiling such a pipeline for CUDA says why (the
    stage kind's limits, before any work); the CPU backends take them."""
    assert si_kernel.kernel_limits(512) is None and si_kernel.kernel_limits(96) is None
    assert "dim <= 512 on the GPU, got 576" in si_kernel.kernel_limits(576)
    spec = csa_dsl.preset("v4-flash-selfindex")
    wide = spec.replace(attention=dataclasses.replace(spec.attention, qk_dim=576),
                        compressor=dataclasses.replace(spec.compressor, dim=576))
    assert "dim <= 512 on the GPU, got 576" in unsupported(wide, "cuda")
    assert unsupported(wide, "interpret") is None and unsupported(spec, "cuda") is None


def test_selfindex_key_split_fills_whole_waves():
    """The score's key split on 132 one-program SMs: 32 blocks split 4 ways (one full wave), not 5 (1.2
    waves), a 2,048-query chunk's 16 blocks 8; one block takes all 16; a full wave of blocks is not split."""
    assert si_kernel.key_split(32, 132) == 4 and si_kernel.key_split(2048 // si_kernel.SCORE_QUERIES, 132) == 8
    assert si_kernel.key_split(1, 132) == si_kernel.MAX_KEY_SPLIT
    assert si_kernel.key_split(132, 132) == 1 and si_kernel.key_split(264, 132) == 1
    cost = lambda b, j: -(-b * j // 132) / j          # waves per split: the time of a block's tiles
    for b in range(1, 300):
        assert all(cost(b, si_kernel.key_split(b, 132)) <= cost(b, j) for j in range(1, si_kernel.MAX_KEY_SPLIT + 1))


@pytest.mark.interpret
def test_selfindex_kernels_match_reference():
    g = torch.Generator().manual_seed(12)
    rows = torch.randn(2, 300, 96, generator=g).bfloat16()      # 96: not a power of two (padded inside)
    c1, a1 = torch.empty(2, 300, 3, dtype=torch.int32), torch.empty(2, 300)
    c2, a2 = c1.clone(), a1.clone()
    si_naive.codes(rows, c1, a1)
    si_kernel.codes(rows, c2, a2)
    assert torch.equal(c1, c2) and torch.allclose(a1, a2, rtol=1e-6)
    # queries 1100..1169 (one block) see 275..292 rows: five key tiles of 64 (the last partial), shared out over
    # the interpreter's key split of four (program 0 takes tiles 0 and 4: its loop carries a prefetched tile)
    assert si_kernel.key_split(1, si_kernel.score_slots(torch.device("cpu"), True)) == 4
    q = torch.randn(70, 4, 96, generator=g).bfloat16()
    q[3] = 0                                                      # a zero query: scale stays finite, scores 0
    o1, o2 = torch.full((70, 320), 3.0), torch.full((70, 320), 3.0)
    limbs, scale = si_kernel.qbar_limbs(q)
    si_naive.score_chunk(q, c1[0], a1[0], o1, s_first=1100, ratio=4)
    si_kernel.score_chunk(q, c1[0], a1[0], o2, s_first=1100, ratio=4)
    # what the selection reads: each query's visible rows (s + 1) // 4; the kernel writes its program's
    # tile range (-inf past a row's own count) and nothing past the chunk's last visible row
    vis = torch.arange(320)[None, :] < ((torch.arange(1100, 1170) + 1) // 4)[:, None]
    assert torch.isfinite(o2[vis]).all() and torch.allclose(o1[vis], o2[vis], rtol=1e-5, atol=1e-5 * o1[vis].abs().max())
    assert o2[~vis & (o2 != 3.0)].eq(float("-inf")).all() and o2[:, 292:].eq(3.0).all()
    # bit-exact: the kernel's score is the exact integer dot of each limb with the signs, combined and scaled in
    # fp32 as (D2 * 2^16 + (D1 * 2^8 + D0)) * scale * alpha
    D = 96
    signs = si_naive.unpack_signs(c1[0], D).long()
    dots = [limbs[:, k * D:(k + 1) * D].long() @ signs.T for k in range(3)]
    want = ((dots[0].float() * 65536.0 + (dots[1] * 256 + dots[2]).float()) * scale[:, None]) * a1[0][None, :]
    assert torch.equal(o2[:, :300][vis[:, :300]], want[vis[:, :300]])


@pytest.mark.interpret
def test_selfindex_query_limbs_hold_the_head_sum():
    """The head sum as u * scale: three int8 limbs (u = l2 2^16 + l1 2^8 + l0, |u| <= 2^22), scale a power of
    two with max |qbar| < 2^22 scale; each channel within half a step; zero rows stay finite; a non-finite
    channel makes the whole row's scale NaN."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(9, 3, 64, generator=g).bfloat16()
    q[1] = 0
    q[2] *= 1e-30                                    # tiny: the exponent clamp keeps the scale normal
    q[3] *= 1e30
    q[4, 0, 5] = float("nan")
    q[5, 2, 9] = float("inf")
    limbs, scale = si_kernel.qbar_limbs(q)
    qb = q.float().sum(1).double()
    L = limbs.long().view(9, 3, 64)
    u = L[:, 0] * 65536 + L[:, 1] * 256 + L[:, 2]
    ok = torch.tensor([i not in (4, 5) for i in range(9)])
    assert scale[~ok].isnan().all() and torch.isfinite(scale[ok]).all()
    assert torch.equal(torch.frexp(scale[ok])[0], torch.full_like(scale[ok], 0.5))     # powers of two
    assert u[ok].abs().le(2**22).all() and limbs.min() >= -128 and limbs.max() <= 127
    assert (u[ok].double() * scale[ok, None].double() - qb[ok]).abs().le(scale[ok, None].double() / 2).all()
    m = qb[ok].abs().amax(1)
    assert (m < 2**22 * scale[ok].double()).all() and ((m >= 2**21 * scale[ok].double()) | (m < 2.0**-99)).all()
    assert u[1].eq(0).all()


@pytest.mark.interpret
def test_selfindex_selection_recall_against_the_exact_1bit_topk():
    """The composed program's selected rows (interpreter kernels) have tie-aware recall 1.0 against the
    exact top-k of the 1-bit score, computed here in fp64 from the rows the program attended."""
    spec = Pipeline(name="si", compressor=Compressor(ratio=4, dim=64, rope=RoPE(dim=16)), indexer=SelfIndex(topk=8),
                    attention=SparseAttention(heads=4, qk_dim=64, v_dim=64, window=4, inverse_rope=None))
    S = 260
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=4)
    fwd = csa_dsl.compile(spec, "cpu", csa_dsl.Schedule(path="composed", query_chunk=64), backend="interpret")
    _, idx = fwd(**inp, return_indices=True)
    c = spec.compressor
    cos, sin = cos_sin(rotary(c.rope), torch.arange(S))
    rows = comp_naive.compress(inp["cmp_kv"], inp["cmp_gate"], inp["cmp_ape"], inp["cmp_norm"], **params(c), cos=cos,
                               sin=sin)[0].double()     # the kernel's rows are within a bf16 ulp of these
    exact = torch.einsum("sd,td->st", inp["q"][0].double().sum(1), torch.where(rows >= 0, 1.0, -1.0).double())
    exact = exact * rows.abs().mean(-1)[None, :]
    exact = ix_naive.mask_invisible(exact.float(), torch.arange(S), 4)
    sel = idx[0, :, 4:]
    sel = torch.where(sel >= 0, sel - S, sel)
    rec, det = tie_aware_recall(sel, exact, spec.topk_eff(S))
    assert rec == 1.0 and det["duplicates"] == 0 and det["wrong_padding_rows"] == 0, det
