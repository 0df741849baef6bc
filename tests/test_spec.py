"""Spec DSL: presets, validation messages, round trips, schedule, inputs."""
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import csa_dsl
from csa_dsl import (Compressor, Indexer, Pipeline, RoPE, Schedule, SparseAttention, SpecError, YaRN,
                     input_signature, random_inputs, validate_inputs)

# The table of ../shared/docs/csa-semantics.md ("Presets"), written out independently.
SEMANTICS_TABLE = {
    #            H    D    Dv   m  window sink  HI  DI   topk
    "v4-flash": (64, 512, 512, 4, 128, True, 64, 128, 512),
    "v4-pro": (128, 512, 512, 4, 128, True, 64, 128, 1024),
    "v3.2": (128, 576, 512, 1, 0, False, 64, 128, 2048),
}


@pytest.mark.parametrize("name", list(SEMANTICS_TABLE))
def test_presets_equal_semantics_table(name):
    p = csa_dsl.preset(name)
    H, D, Dv, m, win, sink, HI, DI, topk = SEMANTICS_TABLE[name]
    a, ix = p.attention, p.indexer
    assert (a.heads, a.qk_dim, a.v_dim, p.ratio, a.window, a.sink) == (H, D, Dv, m, win, sink)
    assert (ix.heads, ix.dim, ix.topk) == (HI, DI, topk)
    if m == 4:  # V4: overlap, RoPE-YaRN on the last 64 dims, Hadamard on the indexer's keys, inverse RoPE
        assert p.compressor.overlap and p.compressor.coff == 2 and p.compressor.dim == D
        assert ix.compressor.overlap and ix.compressor.hadamard and ix.compressor.dim == DI
        assert not p.compressor.hadamard
        y = p.compressor.rope.yarn
        assert (p.compressor.rope.dim, y.base, y.factor, y.original_seq_len, y.beta_fast, y.beta_slow) == \
            (64, 160000, 16, 65536, 32, 1)
        assert a.inverse_rope == p.compressor.rope
        assert math.isclose(a.softmax_scale, 512 ** -0.5)
    else:  # V3.2: no compressor, explicit scale
        assert p.compressor is None and ix.compressor is None and a.inverse_rope is None
        assert math.isclose(a.softmax_scale, 192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(SpecError, match=r"unknown preset 'v5'.*v4-flash, v4-pro, v3.2"):
        csa_dsl.preset("v5")


@pytest.mark.parametrize("name", list(SEMANTICS_TABLE))
def test_round_trip_dict_and_json(name):
    p = csa_dsl.preset(name)
    assert Pipeline.from_dict(p.to_dict()) == p
    assert Pipeline.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["type"] == "Pipeline"
    text = str(p)
    assert name in text and "indexer" in text and "attention" in text


def _v4_small(**att):
    rope = RoPE(dim=16)
    return Pipeline(
        compressor=Compressor(ratio=4, dim=64, rope=rope),
        indexer=Indexer(heads=16, dim=32, topk=8, compressor=Compressor(ratio=4, dim=32, rope=rope, hadamard=True)),
        attention=SparseAttention(**({"heads": 16, "qk_dim": 64, "v_dim": 64, "window": 16,
                                       "inverse_rope": rope} | att)),
    )


# every validation error, with (part of) its message
ERRORS = [
    (lambda: Compressor(ratio=0), r"ratio must be >= 1"),
    (lambda: Compressor(ratio=3), r"power of two in 1\.\.128"),
    (lambda: Compressor(dim=100), r"dim = 100 is not a multiple of 16.*96 or 112"),
    (lambda: Compressor(dim=64, rope=RoPE(dim=128)), r"rope\.dim = 128 is larger than the row dim 64"),
    (lambda: Compressor(dim=48, rope=RoPE(dim=16), hadamard=True), r"hadamard needs a power-of-two dim"),
    (lambda: Compressor(overlap=1), r"overlap must be a bool"),
    (lambda: Compressor(norm_eps=0), r"norm_eps must be in \(0, 1\)"),
    (lambda: RoPE(dim=7), r"RoPE\.dim must be even"),
    (lambda: RoPE(dim=1.5), r"RoPE\.dim must be an int"),
    (lambda: YaRN(factor=0.5), r"factor must be >= 1"),
    (lambda: YaRN(beta_fast=1, beta_slow=2), r"beta_fast > beta_slow"),
    (lambda: YaRN(base=1), r"base must be a number > 1"),
    (lambda: Indexer(heads=0), r"Indexer\.heads must be >= 1"),
    (lambda: Indexer(dim=120), r"Indexer\.dim = 120 is not a multiple of 16"),
    (lambda: Indexer(topk=0), r"topk must be >= 1"),
    (lambda: Indexer(dim=128, compressor=Compressor(dim=64, rope=RoPE(16))), r"compressor\.dim = 64 must equal"),
    (lambda: SparseAttention(qk_dim=500), r"qk_dim = 500 is not a multiple of 16"),
    (lambda: SparseAttention(v_dim=640, qk_dim=512), r"v_dim = 640 > qk_dim = 512"),
    (lambda: SparseAttention(window=-1), r"window must be >= 0"),
    (lambda: SparseAttention(window=5000), r"larger than 4096"),
    (lambda: SparseAttention(heads=256), r"at most 128 query heads"),
    (lambda: SparseAttention(scale=-1.0), r"scale must be a positive finite number"),
    (lambda: SparseAttention(scale=float("nan")), r"scale must be a positive finite number"),
    (lambda: SparseAttention(v_dim=32, qk_dim=64, inverse_rope=RoPE(64)), r"inverse_rope\.dim = 64 is larger"),
    (lambda: SparseAttention(sink="yes"), r"sink must be a bool"),
    (lambda: Pipeline(attention=SparseAttention(window=0), indexer=Indexer(compressor=Compressor(dim=128)),
                      compressor=None), r"no attention compressor.*indexer has one"),
    (lambda: Pipeline(attention=SparseAttention(window=128, qk_dim=576, inverse_rope=None), indexer=Indexer()),
     r"set SparseAttention\.window = 0"),
    (lambda: Pipeline(attention=SparseAttention(), indexer=Indexer(), compressor=Compressor(dim=512)),
     r"indexer has no compressor"),
    (lambda: Pipeline(attention=SparseAttention(), compressor=Compressor(dim=256),
                      indexer=Indexer(compressor=Compressor(dim=128, hadamard=True))), r"must equal SparseAttention\.qk_dim"),
    (lambda: Pipeline(attention=SparseAttention(), compressor=Compressor(dim=512, ratio=4),
                      indexer=Indexer(compressor=Compressor(dim=128, ratio=8))), r"ratio = 8 differs"),
    (lambda: Pipeline(attention="x", indexer=Indexer()), r"attention must be a SparseAttention"),
    (lambda: Pipeline.from_dict({"type": "Pipeline", "bogus": 1}), r"unknown field\(s\) \['bogus'\]"),
    (lambda: Pipeline.from_dict({"type": "Indexer"}), r"expected type 'Pipeline'"),
    (lambda: Schedule(path="fast"), r"Schedule\.path = 'fast' is not one of"),
    (lambda: Schedule(query_chunk=0), r"query_chunk = 0 must be a positive int"),
    (lambda: Schedule(check_inputs="yes"), r"check_inputs must be a bool"),
    (lambda: Schedule(memory_budget="lots"), r"cannot read a byte size"),
    (lambda: Schedule(budget_fraction=1.5), r"budget_fraction must be in"),
]


@pytest.mark.parametrize("make,msg", ERRORS)
def test_validation_errors(make, msg):
    with pytest.raises(SpecError, match=msg):
        make()


def test_custom_specs_build():
    for m in (1, 2, 4, 8):
        for window in (0, 128):
            for sink in (False, True):
                rope = RoPE(dim=16)
                p = Pipeline(
                    compressor=Compressor(ratio=m, dim=64, overlap=(m == 4), rope=rope),
                    indexer=Indexer(heads=32, dim=32, topk=40,
                                    compressor=Compressor(ratio=m, dim=32, overlap=(m == 4), rope=rope, hadamard=True)),
                    attention=SparseAttention(heads=16, qk_dim=64, v_dim=48, window=window, sink=sink,
                                              inverse_rope=rope),
                )
                assert p.ratio == m and Pipeline.from_json(p.to_json()) == p
                assert p.index_width(1000) == window + min(40, 1000 // m)


def test_schedule_and_bytes():
    assert csa_dsl.parse_bytes("8GiB") == 8 * 2**30
    assert csa_dsl.parse_bytes("512 MiB") == 512 * 2**20
    assert csa_dsl.parse_bytes("2e9") == 2 * 10**9
    assert Schedule(memory_budget="1GiB").memory_budget == 2**30


# --- hypothesis: random specs are accepted iff they satisfy the documented rules --------
dims = st.integers(min_value=1, max_value=1100)


@settings(max_examples=150, deadline=None)
@given(heads=st.integers(1, 200), qk=dims, v=dims, window=st.integers(-2, 300), rope_dim=st.integers(1, 130),
       ratio=st.integers(0, 20), idx_dim=dims, topk=st.integers(0, 5000))
def test_hypothesis_random_specs(heads, qk, v, window, rope_dim, ratio, idx_dim, topk):
    valid = (heads <= 128 and qk % 16 == 0 and qk >= 16 and v % 16 == 0 and 16 <= v <= qk and 0 <= window <= 4096
             and rope_dim % 2 == 0 and rope_dim <= min(v, qk, idx_dim) and ratio >= 1 and ratio & (ratio - 1) == 0
             and idx_dim % 16 == 0 and idx_dim >= 16 and idx_dim & (idx_dim - 1) == 0 and topk >= 1)
    try:
        rope = RoPE(dim=rope_dim)
        p = Pipeline(
            compressor=Compressor(ratio=ratio, dim=qk, rope=rope),
            indexer=Indexer(heads=64, dim=idx_dim, topk=topk,
                            compressor=Compressor(ratio=ratio, dim=idx_dim, rope=rope, hadamard=True)),
            attention=SparseAttention(heads=heads, qk_dim=qk, v_dim=v, window=window, inverse_rope=rope),
        )
    except SpecError as e:
        assert not valid, f"valid spec rejected: {e}"
        assert str(e)  # every rejection says why
        return
    assert valid, "invalid spec accepted"
    assert Pipeline.from_dict(p.to_dict()) == p


# --- inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SEMANTICS_TABLE))
def test_random_inputs_match_signature(name):
    p = csa_dsl.preset(name)
    inp = random_inputs(p, 2, 33, "cpu", seed=3)
    sig = input_signature(p, 2, 33)
    assert set(inp) == set(sig)
    for k, (shape, dtype) in sig.items():
        assert tuple(inp[k].shape) == shape and inp[k].dtype == dtype, k
        assert (inp[k] != 0).all(), f"{k} has zeros"
        assert torch.isfinite(inp[k].float()).all()
    again = random_inputs(p, 2, 33, "cpu", seed=3)
    assert all(torch.equal(inp[k], again[k]) for k in inp)
    other = random_inputs(p, 2, 33, "cpu", seed=4)
    assert not torch.equal(inp["q"], other["q"])
    assert validate_inputs(p, inp) == (2, 33)
    if name == "v3.2":
        assert "idx_k" in inp and "cmp_kv" not in inp and "sink" not in inp
    else:
        assert "idx_k" not in inp and inp["cmp_kv"].shape[-1] == 1024 and inp["idx_kv"].shape[-1] == 256


def test_validate_inputs_errors():
    p = csa_dsl.preset("v4-flash")
    inp = random_inputs(p, 1, 16, "cpu")
    bad = dict(inp)
    del bad["sink"]
    with pytest.raises(SpecError, match=r"missing input\(s\) \['sink'\]"):
        validate_inputs(p, bad)
    with pytest.raises(SpecError, match=r"unexpected input\(s\) \['idx_k'\]"):
        validate_inputs(p, inp | {"idx_k": inp["kv"]})
    with pytest.raises(SpecError, match=r"input 'kv' has shape \(1, 15, 512\), expected \(1, 16, 512\)"):
        validate_inputs(p, inp | {"kv": inp["kv"][:, :15]})
    with pytest.raises(SpecError, match=r"input 'q' has dtype torch.float32, expected torch.bfloat16"):
        validate_inputs(p, inp | {"q": inp["q"].float()})
    with pytest.raises(SpecError, match=r"'idx_w' is not contiguous"):
        validate_inputs(p, inp | {"idx_w": torch.randn(1, 64, 16).transpose(1, 2)})
    with pytest.raises(SpecError, match=r"q must be a 4-D tensor"):
        validate_inputs(p, inp | {"q": inp["q"][0]})


def test_compile_errors():
    with pytest.raises(SpecError, match="takes a csa_dsl.Pipeline"):
        csa_dsl.compile("v4-flash")
    with pytest.raises(SpecError, match="device must be 'cuda' or 'cpu'"):
        csa_dsl.compile(csa_dsl.preset("v3.2"), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="no CUDA GPU is visible"):
            csa_dsl.compile(csa_dsl.preset("v3.2"), device="cuda")
    fwd = csa_dsl.compile(csa_dsl.preset("v3.2"), device="cpu")
    with pytest.raises(SpecError, match="missing input"):
        fwd(q=torch.zeros(1, 2, 128, 576, dtype=torch.bfloat16))
