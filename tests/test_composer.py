"""Composer, planner and runtime on the CPU: composed == reference; the planner's arithmetic and refusals."""
import pytest
import torch

import csa_dsl
from csa_dsl import Schedule
from pipeline import planner, reference as ref
from pipeline.composer import compose
from pipeline.ir import Call, Loop
from pipeline.metrics import rel_err

from test_reference import small_family


def _preset_small_topk(name):
    """The preset's dims; V4-pro and V3.2 get a smaller top-k so that T > top-k at a CPU-sized S."""
    p = csa_dsl.preset(name)
    if name == "v4-flash":
        return p, 2304                        # T = 576 > 512: selection really selects
    ix = p.indexer
    small = csa_dsl.Indexer(heads=ix.heads, dim=ix.dim, topk=96, compressor=ix.compressor)
    return p.replace(indexer=small, name=name + "-k96"), 512


@pytest.mark.parametrize("name", ["v4-flash", "v4-pro", "v3.2"])
def test_composed_equals_reference_presets(name):
    spec, S = _preset_small_topk(name)
    assert spec.num_compressed(S) > spec.indexer.topk
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=11)
    a, ia = csa_dsl.compile(spec, "cpu")(**inp, return_indices=True)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=256), backend="torch")
    b, ib = fwd(**inp, return_indices=True)
    assert torch.equal(ia, ib)
    assert rel_err(b, a) == 0.0
    assert not torch.isnan(b.float()).any()


@pytest.mark.parametrize("family", ["v4-flash", "v3.2"])
def test_composed_custom_batch2(family):
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 2, 150, "cpu", seed=3)
    a, ia = ref.forward(spec, inp, return_indices=True)
    b, ib = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=64), backend="torch")(
        **inp, return_indices=True)
    assert torch.equal(ia, ib) and torch.equal(a, b)


@pytest.mark.interpret
@pytest.mark.parametrize("family", ["v4-flash", "v3.2"])
def test_composed_interpret_backend(family):
    """The composed program with the Triton kernels in the interpreter (scores on fp32 copies of the bf16
    operands, exact) against the reference: the same key lists, the same output."""
    spec = small_family(family)
    S = 90
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=5)
    a, ia = ref.forward(spec, inp, return_indices=True)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=64), backend="interpret")
    b, ib = fwd(**inp, return_indices=True)
    assert torch.equal(ia.sort(-1).values, ib.sort(-1).values)
    assert rel_err(b, a) < 1e-2


def test_planner_bytes_v4_flash_262k():
    spec = csa_dsl.preset("v4-flash")
    S, T = 262144, 65536
    cb = planner.chunk_buffer_bytes(spec, S, 2048)
    assert cb["scores"] == 2048 * T * 4 == 512 * 2**20
    assert cb["cand"] == 2048 * 1024 * 8
    assert cb["keys"] == 2048 * 640 * 4
    pb = planner.program_buffer_bytes(spec, 1, S)
    assert pb["kv_all"] == (S + T) * 512 * 2 and pb["k_idx"] == T * 128 * 2
    assert planner.output_bytes(spec, 1, S) == S * 64 * 512 * 2
    m = planner.materialize_bytes(spec, 1, S)
    assert m["scores [B,S,T] fp32 (after the head sum)"] == S * T * 4          # 68.7 GB
    assert m["scores [B,S,HI,T] fp32 (einsum output)"] == S * 64 * T * 4      # 4.4 TB
    assert planner.choose_chunk(spec, 1, S, 8 * 2**30) == 2048
    assert planner.choose_chunk(spec, 1, S, 600 * 2**20) == 512


def test_planner_refuses_with_advice():
    spec = csa_dsl.preset("v4-flash")
    with pytest.raises(planner.PlanError, match=r"no plan .* fits the budget of 100\.00 MiB.*raise the budget to "
                                                r"at least .*S = [\d,]+ tokens per GPU.*more GPUs"):
        planner.choose_chunk(spec, 1, 262144, 100 * 2**20)
    with pytest.raises(planner.PlanError, match=r"let the planner pick the chunk"):
        planner.choose_chunk(spec, 1, 262144, 600 * 2**20, query_chunk=2048)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", memory_budget="1MiB"))
    with pytest.raises(planner.PlanError):
        fwd.plan(65536)


def test_plan_program_structure_262k():
    spec = csa_dsl.preset("v4-flash")
    prog = compose(spec, 1, 262144, 2048, "cuda")
    text = str(prog)
    assert "for s0 in range(0, 262,144, C = 2,048)" in text and "128 query chunks" in text
    shapes = {b.name: b.shape for b in prog.buffers.values() if b.scope in ("program", "chunk")}
    assert all(not (len(s) >= 2 and s[-2:] == (262144, 65536)) for s in shapes.values())   # no [S, T]
    assert shapes["scores"] == (2048, 65536)
    loops = [n for n in prog.body if isinstance(n, Loop)]
    inner = [c.op for c in loops[0].body[0].body]
    assert inner == ["score", "select", "attention", "inverse_rope"]
    assert [c.op for c in prog.body if isinstance(c, Call)] == ["copy_kv", "compress_kv", "compress_idx"]
    assert prog.workspace_bytes < 2 * 2**30


def test_runtime_allocates_what_was_planned(monkeypatch):
    """Every buffer the runtime allocates is one the planner listed, with its shape."""
    spec = small_family("v4-flash")
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=64), backend="torch")
    seen = []
    from pipeline import runtime
    orig = runtime.Runtime._alloc

    def spy(self, name):
        t = orig(self, name)
        seen.append((name, tuple(t.shape)))
        return t
    monkeypatch.setattr(runtime.Runtime, "_alloc", spy)
    inp = csa_dsl.random_inputs(spec, 1, 100, "cpu")
    fwd(**inp)
    prog = fwd.plan(100)
    assert seen and all(prog.buffers[n].shape == s for n, s in seen)


def test_visible_pairs_closed_form():
    for S, m in [(1, 1), (7, 2), (100, 1), (203, 4), (4096, 4), (1000, 8)]:
        assert planner.visible_pairs(S, m) == sum((s + 1) // m for s in range(S))
    # the indexer work of v4-flash at S = 262,144 (semantics doc: 1.41e14 FLOP)
    assert abs(2 * 64 * 128 * planner.visible_pairs(262144, 4) - 1.41e14) < 0.005e14
