"""Packed variable-length batches (docs/semantics.md section 8): fwd.varlen against each sequence's own
B = 1 run, bit for bit, for every layer family, on the PyTorch backend and the Triton kernels in the
interpreter; cu_seqlens validation before any launch; the packed program on every path."""
import re

import pytest
import torch

import csa_dsl
from csa_dsl import Packed, Schedule
from kernels_triton.indexer import ir as indexer_ir
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.varlen import kernel as varlen_kernel
from kernels_triton.varlen import naive as varlen_naive
from pipeline.lang.errors import InputError
from ptxas_report import assembled, ptxas_usage

from test_reference import small_family

FAMILIES = ["v4-flash", "v3.2", "hca", "window", "selfindex", "v4-flash-quant", "v3.2-quant", "v4-flash-bf16-scores"]
# lengths 1, < window (6), not a multiple of m (4), an empty sequence; the second set has every
# sequence shorter than topk * m, so a chunk holds more rows than any one query may select
LENGTHS = {"mixed": [1, 5, 0, 23, 37, 64], "short": [11, 9, 0, 10, 11]}
SCHEDULE = Schedule(path="composed", query_chunk=16)


def _own_runs_match(fwd, spec, lengths, seed):
    cu, packed = csa_dsl.random_packed_inputs(spec, lengths, seed=seed)
    out, ids = fwd.varlen(cu, return_indices=True, **packed)
    N = sum(lengths)
    assert out.shape == (N, spec.attention.heads, spec.attention.v_dim) and out.dtype == torch.bfloat16
    assert ids.shape == (N, spec.index_width(max(lengths))) and ids.dtype == torch.int32
    c = cu.tolist()
    for i, L in enumerate(lengths):
        if L == 0:
            continue
        o1, i1 = fwd(return_indices=True, **csa_dsl.unpack(spec, packed, c[i], c[i + 1]))
        w = i1.shape[-1]
        assert torch.equal(o1[0], out[c[i]:c[i + 1]]), (spec.name, lengths, i)
        assert torch.equal(i1[0], ids[c[i]:c[i + 1], :w]), (spec.name, lengths, i)
        assert bool((ids[c[i]:c[i + 1], w:] == -1).all())     # the longer sequences' extra slots
    return out, ids


@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("family", FAMILIES)
def test_varlen_equals_own_runs_torch(family, lengths):
    spec = small_family(family)
    fwd = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="torch")
    _own_runs_match(fwd, spec, lengths, seed=len(lengths))


@pytest.mark.interpret
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("family", FAMILIES)
def test_varlen_equals_own_runs_triton_interpreted(family, lengths):
    """The Triton kernels (segment-aware score, select, compressor, RoPE, HCA, self-index) in the interpreter."""
    spec = small_family(family)
    fwd = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="interpret")
    _own_runs_match(fwd, spec, lengths, seed=7)


@pytest.mark.parametrize("family", ["v4-flash", "v3.2", "hca", "window"])
def test_packed_program_on_every_path(family):
    """The reference and materialising schedules of a packed batch give the composed program's bits."""
    spec = small_family(family)
    cu, packed = csa_dsl.random_packed_inputs(spec, [3, 0, 21, 9], seed=2)
    res = {}
    for path in ("composed", "reference", "materialize"):
        fwd = csa_dsl.compile(spec, "cpu", Schedule(path=path, query_chunk=16), backend="torch")
        program = fwd.plan(33, packed=Packed(4, 21), return_indices=True)
        assert "cu_seqlens" in program.buffers and "varlen.segments" in str(program)
        res[path] = fwd.execute(program, cu_seqlens=cu, **packed)
    for path in ("reference", "materialize"):
        assert all(torch.equal(a, b) for a, b in zip(res[path], res["composed"])), path


def test_max_seqlen_given_is_trusted_and_wider_lists_change_no_bit():
    """With max_seqlen given nothing is read back; a larger one widens the lists (more -1 slots) only."""
    spec = small_family("v4-flash")
    fwd = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="torch")
    cu, packed = csa_dsl.random_packed_inputs(spec, [7, 12, 2], seed=5)   # K = 12 // 4 = 3 < topk = 5
    o1, i1 = fwd.varlen(cu, return_indices=True, **packed)
    o2, i2 = fwd.varlen(cu, max_seqlen=21, return_indices=True, **packed)
    assert torch.equal(o1, o2) and i2.shape[1] > i1.shape[1]
    assert torch.equal(i2[:, :i1.shape[1]], i1) and bool((i2[:, i1.shape[1]:] == -1).all())


def test_caller_owned_outputs():
    spec = small_family("hca")
    fwd = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="torch")
    cu, packed = csa_dsl.random_packed_inputs(spec, [17, 4], seed=1)
    ref = fwd.varlen(cu, **packed)
    out = torch.full_like(ref, float("nan"))
    assert fwd.varlen(cu, out=out, **packed) is out and torch.equal(out, ref)
    inp = csa_dsl.random_inputs(spec, 2, 12, seed=1)
    ref = fwd(**inp)
    out = torch.full_like(ref, float("nan"))
    assert fwd(out=out, **inp) is out and torch.equal(out, ref)
    with pytest.raises(InputError, match="contiguous"):
        fwd(out=torch.empty(2, 12, 32, 4, dtype=torch.bfloat16).transpose(2, 3), **inp)
    with pytest.raises(InputError, match="out="):
        fwd(out=(out, out), **inp)


def _bad(fwd, cu, packed, match, **kw):
    with pytest.raises(InputError, match=match):
        fwd.varlen(cu, **packed, **kw)


def test_cu_seqlens_validation():
    spec = small_family("v4-flash")
    fwd = csa_dsl.compile(spec, "cpu", SCHEDULE, backend="torch")
    cu, packed = csa_dsl.random_packed_inputs(spec, [5, 9, 6], seed=0)
    _bad(fwd, cu.long(), packed, "int32")
    _bad(fwd, cu[None], packed, "int32 tensor")
    _bad(fwd, cu[:1], packed, "at least one sequence")
    _bad(fwd, cu.to("meta"), packed, "cu_seqlens is on meta")
    _bad(fwd, torch.tensor([0, 9, 5, 20], dtype=torch.int32), packed, r"never decrease.*cu\[1\] = 9 > cu\[2\] = 5")
    _bad(fwd, torch.tensor([0, 5, 14, 19], dtype=torch.int32), packed, "end at N = 20")
    _bad(fwd, torch.tensor([1, 5, 14, 20], dtype=torch.int32), packed, r"cu\[0\] = 1")
    _bad(fwd, cu, packed, "sequence 1 has 9 tokens > max_seqlen = 8", max_seqlen=8, check_inputs=True)
    _bad(fwd, cu, packed, "max_seqlen must be an int", max_seqlen=21)
    _bad(fwd, cu, dict(packed, q=packed["q"][None]), "packed q must be a 3-D tensor")
    _bad(fwd, cu, dict(packed, kv=packed["kv"][:-1]), "input 'kv' has shape")
    _bad(fwd, cu, {k: v for k, v in packed.items() if k != "idx_w"}, "missing input")
    with pytest.raises(InputError, match="fwd.varlen"):    # packed inputs given to the padded call
        fwd(**packed)


def test_pack_unpack_signature():
    spec = small_family("v4-flash")
    inp = csa_dsl.random_inputs(spec, 1, 10, seed=0)
    packed = csa_dsl.pack(spec, inp)
    sig = csa_dsl.packed_signature(spec, 10)
    assert {n: (tuple(t.shape), t.dtype) for n, t in packed.items()} == sig
    back = csa_dsl.unpack(spec, packed)
    assert all(torch.equal(back[n], inp[n]) for n in inp)
    with pytest.raises(InputError, match="at least one token"):
        csa_dsl.random_packed_inputs(spec, [0, 0])


@pytest.mark.interpret
def test_segment_kernel_equals_reference():
    """kernel.segments (a binary search of cu_seqlens per token and per row) builds naive.segments' tables."""
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        lens = torch.randint(0, 3, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g) * \
            torch.tensor([0, 1, 3, 4, 7, 16, 33])[torch.randint(0, 7, (1,), generator=g)]
        lens[0] += 1
        cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).int()
        N = int(cu[-1])
        for m in (0, 1, 4):
            R = N // m if m else 0
            a, b = torch.zeros(N, 4, dtype=torch.int32), torch.full((N, 4), 99, dtype=torch.int32)
            ra, rb = (torch.zeros(R, 2, dtype=torch.int32), torch.full((R, 2), 99, dtype=torch.int32)) if R else (None,
                                                                                                                 None)
            varlen_naive.segments(cu, a, ra, ratio=m)
            varlen_kernel.segments(cu, b, rb, ratio=m)
            assert torch.equal(a, b), (lens, m)
            assert R == 0 or torch.equal(ra, rb), (lens, m)


def test_packed_workspace_does_not_grow_with_the_batch():
    """A chunk's score buffer is max_seqlen / m columns (each row its own sequence's rows from column 0): the
    same for 4 or 16 sequences of 1,024."""
    spec = csa_dsl.preset("v4-flash")
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=256), backend="torch")
    small, big = (fwd.plan(n * 1024, packed=Packed(n, 1024), budget=1 << 34) for n in (4, 16))
    assert small.buffers["scores"].shape == big.buffers["scores"].shape == (256, 256)
    assert "varlen.segments" in str(big) and big.consts["n_seqs"] == 16


@pytest.mark.parametrize("kernel", ["score_fp8", "select"])
def test_packed_kernel_variants_compile_for_hopper(kernel):
    """The VARLEN variants compile for sm_90 without a GPU (the FP8 score keeps its wgmma)."""
    ir = indexer_ir.compile_ir(kernel, window=128 if kernel == "select" else 0, varlen=True)
    assert "ptx" in ir and ("wgmma" in ir["ptx"] if kernel == "score_fp8" else True)


def _sass_loops(ptx: str, holding: str) -> list:
    """The SASS of one kernel's loops (a label to the branch back to it) that hold `holding`, for sm_90a."""
    lines = assembled(ptx)[1]
    labels = {m.group(1): i for i, ln in enumerate(lines) for m in [re.match(r"(\.L_x_\d+):", ln.strip())] if m}
    loops = []
    for i, ln in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", ln)
        if m and labels.get(m.group(1), i) < i:
            body = "\n".join(lines[labels[m.group(1)]:i + 1])
            if holding in body:
                loops.append(body)
    return loops


def test_packed_kernels_cost_no_registers_or_spills():
    """Under the FP8 score's register cap neither walk spills (the packed one keeps a block's row base
    scalar), and the packed selection needs about the registers of the unpacked one (no per-row column
    base: 108 registers against 72 when it had one)."""
    for varlen, dim in ((False, 64), (True, 128)):    # unpacked 64 x 128 is the Gluon walk (no cap, its own test)
        regs, spills = ptxas_usage(indexer_ir.compile_ir("score_fp8", dim=dim, varlen=varlen)["ptx"])
        assert spills == 0 and regs <= ikernel.SCORE_FP8_MAXNREG, (varlen, regs, spills)
    own, _ = ptxas_usage(indexer_ir.compile_ir("select", window=128)["ptx"])
    packed, spills = ptxas_usage(indexer_ir.compile_ir("select", window=128, varlen=True)["ptx"])
    assert spills == 0 and packed <= own + 8, (own, packed)


def test_packed_score_walks_keep_uniform_registers():
    """The packed FP8 score walks run in uniform registers as the unpacked one does: their tile range is marked
    warp-uniform (varlen.kernel.warp_uniform), so no loop moves a per-thread value into a uniform register for
    its wgmma, and none spills (before: 15 R2UR a tile, and 64 bytes of spill under the register cap once the
    packed walk stored from the MMA layout; that packed chunk took 0.62 against 0.52 ms unpacked)."""
    for varlen, walks, dim in ((False, 1, 64), (True, 2, 128)):
        loops = _sass_loops(indexer_ir.compile_ir("score_fp8", dim=dim, varlen=varlen)["ptx"], "QGMMA")
        assert len(loops) == walks and all("R2UR" not in body and "STL" not in body for body in loops), varlen
