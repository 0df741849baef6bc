"""Packed batches, torch.compile and CUDA graphs on the GPU: each packed sequence equals its own run bit for
bit at 262,144 tokens; the compiled function equals eager; captured graphs of the padded and the packed
forward replay eager's bits, and a packed graph replays other lengths written into its cu_seqlens."""
import pytest
import torch

import csa_dsl

pytestmark = pytest.mark.gpu


def _own_runs_equal(fwd, spec, cu, packed, out, ids):
    c = cu.tolist()
    for i in range(len(c) - 1):
        if c[i + 1] == c[i]:
            continue
        o1, i1 = fwd(return_indices=True, **csa_dsl.unpack(spec, packed, c[i], c[i + 1]))
        w = i1.shape[-1]
        assert torch.equal(o1[0], out[c[i]:c[i + 1]]), (spec.name, i)
        assert torch.equal(i1[0], ids[c[i]:c[i + 1], :w]), (spec.name, i)
        assert bool((ids[c[i]:c[i + 1], w:] == -1).all())


@pytest.mark.parametrize("name,lengths", [("v4-flash", [70000, 130000, 62144]),
                                          ("v4-flash-hca", [100000, 0, 90000, 72144]),
                                          ("v3.2", [30000, 1, 5000, 30767]),
                                          ("v4-flash-selfindex", [40000, 5, 30001]),
                                          ("v4-window", [70000, 130, 0, 1, 62013])])
def test_varlen_each_sequence_is_its_own_run(name, lengths, fresh_seed):
    spec = csa_dsl.preset(name)
    fwd = csa_dsl.compile(spec, "cuda")
    cu, packed = csa_dsl.random_packed_inputs(spec, lengths, "cuda", seed=fresh_seed)
    out, ids = fwd.varlen(cu, return_indices=True, **packed)
    assert not torch.isnan(out.float()).any()
    _own_runs_equal(fwd, spec, cu, packed, out, ids)


def test_compile_fullgraph_cuda(fresh_seed):
    spec = csa_dsl.preset("v4-flash")
    fwd = csa_dsl.compile(spec, "cuda")
    inp = csa_dsl.random_inputs(spec, 1, 16384, "cuda", seed=fresh_seed)
    ref = fwd(**inp)
    torch._dynamo.reset()
    got = torch.compile(lambda i: fwd(**i) * 1.0, fullgraph=True)(inp)
    assert torch.equal(got, ref)
    cu, packed = csa_dsl.random_packed_inputs(spec, [9000, 7384], "cuda", seed=fresh_seed)
    ref = fwd.varlen(cu, max_seqlen=9000, return_indices=True, **packed)
    got = torch.compile(lambda c, p: fwd.varlen(c, max_seqlen=9000, return_indices=True, **p),
                        fullgraph=True)(cu, packed)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def _capture(fn):
    """Warm up on a side stream (kernels compiled, allocator pools filled), then capture one call."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        res = fn()
    return g, res


@pytest.mark.parametrize("name,S", [("v4-flash", 16384), ("v3.2", 8192)])
def test_cuda_graph_padded_and_packed(name, S, fresh_seed):
    spec = csa_dsl.preset(name)
    fwd = csa_dsl.compile(spec, "cuda")
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=fresh_seed)
    eager = fwd(return_indices=True, **inp)
    g, res = _capture(lambda: fwd(return_indices=True, check_inputs=False, **inp))
    g.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(res, eager))

    # a packed graph is sized by N tokens, n sequences and max_seqlen; any lengths within them replay
    cu, packed = csa_dsl.random_packed_inputs(spec, [S // 2, 0, S // 4, S // 4], "cuda", seed=fresh_seed)
    longest = S // 2
    eager = fwd.varlen(cu, max_seqlen=longest, return_indices=True, **packed)
    g, res = _capture(lambda: fwd.varlen(cu, max_seqlen=longest, return_indices=True, check_inputs=False,
                                         **packed))
    g.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(res, eager))
    cu.copy_(torch.tensor([0, 1000, 1000 + longest, S - 5, S], dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    again = fwd.varlen(cu, max_seqlen=longest, return_indices=True, **packed)
    assert all(torch.equal(a, b) for a, b in zip(res, again))
    _own_runs_equal(fwd, spec, cu, packed, *res)
