"""The torch.library ops (csa_dsl/ops.py): torch.compile(fullgraph=True) over functions that call a compiled
pipeline, padded and packed, with caller-owned outputs, and over the single-stage functions, bit-identical
to eager; fake-tensor shapes; torch.library.opcheck of every op (schema, fake, dispatch)."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import csa_dsl
from csa_dsl import Schedule
from pipeline.lang.errors import InputError

from test_reference import small_family

SCHEDULE = Schedule(path="composed", query_chunk=16)


@pytest.fixture(scope="module")
def fwd():
    return csa_dsl.compile(small_family("v4-flash"), "cpu", SCHEDULE, backend="torch")


def _fresh_compile(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True)


def test_compile_fullgraph_padded_and_varlen(fwd):
    spec = fwd.spec
    inp = csa_dsl.random_inputs(spec, 2, 40, seed=1)
    ref = fwd(return_indices=True, **inp)

    def layer(inp):            # a model's attention layer: the forward and something after it
        out, ids = fwd(return_indices=True, **inp)
        return out.float() * 2, ids
    got = _fresh_compile(layer)(inp)
    assert torch.equal(got[0], ref[0].float() * 2) and torch.equal(got[1], ref[1])

    cu, packed = csa_dsl.random_packed_inputs(spec, [1, 7, 0, 30], seed=2)
    ref = fwd.varlen(cu, max_seqlen=30, return_indices=True, **packed)
    got = _fresh_compile(lambda cu, p: fwd.varlen(cu, max_seqlen=30, return_indices=True, **p))(cu, packed)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))

    out, ids = torch.empty_like(ref[0]), torch.empty_like(ref[1])

    def into(cu, p, out, ids):
        fwd.varlen(cu, max_seqlen=30, return_indices=True, out=(out, ids), **p)
        return out.sum()
    _fresh_compile(into)(cu, packed, out, ids)
    assert torch.equal(out, ref[0]) and torch.equal(ids, ref[1])


def test_compile_single_stages():
    g = torch.Generator().manual_seed(3)
    q, w, k = torch.randn(1, 24, 4, 16, generator=g), torch.randn(1, 24, 4, generator=g), torch.randn(1, 6, 16,
                                                                                                         generator=g)
    ref = csa_dsl.indexer_topk(q, w, k, 3, 4)
    assert torch.equal(_fresh_compile(lambda q, w, k: csa_dsl.indexer_topk(q, w, k, 3, 4))(q, w, k), ref)
    qq = torch.randn(1, 5, 4, 32, generator=g).bfloat16()
    kv = torch.randn(1, 9, 32, generator=g).bfloat16()
    ids = torch.randint(-1, 9, (1, 5, 7), dtype=torch.int32, generator=g)
    sink = torch.randn(4, generator=g)
    ref = csa_dsl.sparse_attention(qq, kv, ids, 0.2, 16, sink)
    assert ref.shape == (1, 5, 4, 16) and ref.dtype == torch.bfloat16
    got = _fresh_compile(lambda a, b, c, d: csa_dsl.sparse_attention(a, b, c, 0.2, 16, d))(qq, kv, ids, sink)
    assert torch.equal(got, ref)


def test_fake_tensor_shapes(fwd):
    spec = fwd.spec
    inp = csa_dsl.random_inputs(spec, 2, 40, seed=1)
    cu, packed = csa_dsl.random_packed_inputs(spec, [1, 7, 0, 30], seed=2)
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) for k, v in inp.items()}
        out, ids = fwd(return_indices=True, **fake)
        assert (out.shape, out.dtype, ids.shape, ids.dtype) == ((2, 40, 4, 32), torch.bfloat16, (2, 40, 11),
                                                                torch.int32)
        fcu, fpk = mode.from_tensor(cu), {k: mode.from_tensor(v) for k, v in packed.items()}
        out, ids = fwd.varlen(fcu, max_seqlen=30, return_indices=True, **fpk)
        assert out.shape == (38, 4, 32) and ids.shape == (38, spec.index_width(30))
        assert fwd.varlen(fcu, **fpk).shape == (38, 4, 32)
        with pytest.raises(InputError, match="needs max_seqlen"):
            fwd.varlen(fcu, return_indices=True, **fpk)
        with pytest.raises(InputError, match="input 'kv' has shape"):     # the layout is checked when tracing
            fwd(**dict(fake, kv=fake["kv"][:, :-1]))
        with pytest.raises(InputError, match="eager call"):
            fwd(profile=True, **fake)
        assert csa_dsl.indexer_topk(fake["idx_q"], fake["idx_w"], mode.from_tensor(torch.randn(2, 10, 16).bfloat16()),
                                    3, 4).shape == (2, 40, 3)


def test_opcheck_every_op(fwd):
    spec = fwd.spec
    names = fwd.input_names
    inp = csa_dsl.random_inputs(spec, 1, 24, seed=1)
    cu, packed = csa_dsl.random_packed_inputs(spec, [3, 0, 21], seed=2)
    out = torch.empty(24, 4, 32, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.ops.csa_dsl.forward.default, (fwd.handle, [inp[n] for n in names], True, None)),
        (torch.ops.csa_dsl.forward_out.default, (fwd.handle, [inp[n] for n in names], [out[None]], None)),
        (torch.ops.csa_dsl.forward_varlen.default, (fwd.handle, cu, [packed[n] for n in names], 21, True, None)),
        (torch.ops.csa_dsl.forward_varlen_out.default, (fwd.handle, cu, [packed[n] for n in names], [out], 21, None)),
        (torch.ops.csa_dsl.indexer_topk.default, (torch.randn(1, 24, 4, 16, generator=g), torch.randn(1, 24, 4),
                                                  torch.randn(1, 6, 16), 3, 4, "auto", None, None, 0, "bf16", False)),
        (torch.ops.csa_dsl.sparse_attention.default, (torch.randn(1, 5, 4, 32).bfloat16(),
                                                      torch.randn(1, 9, 32).bfloat16(),
                                                      torch.randint(-1, 9, (1, 5, 7), dtype=torch.int32), None, 0.2,
                                                      16, "auto")),
    ]
    for op, args in cases:
        res = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in res.values()), (op, res)


def test_dead_pipeline_handle_is_a_clear_error():
    spec = small_family("window")
    handle = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="torch").handle
    inp = csa_dsl.random_inputs(spec, 1, 8, seed=0)
    with pytest.raises(InputError, match="no compiled pipeline"):
        torch.ops.csa_dsl.forward(handle, list(inp.values()), False, None)
