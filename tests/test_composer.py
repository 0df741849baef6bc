"""Composer, planner and interpreter on the CPU: the Program that prints is the Program that runs.

The composed program is checked against the independent dense oracle of test_reference.py (not
against the reference stages it is built from), edited programs are run to show the interpreter
follows the program and nothing else, and the planner's arithmetic and refusals are checked.
"""
import pytest
import torch

import csa_dsl
from csa_dsl import Schedule
from kernels_triton.indexer.cost import visible_pairs
from pipeline import interpreter, planner
from pipeline.composer import compose, compose_indexer, walk_calls
from pipeline.lang.errors import InputError, PlanError, SpecError
from pipeline.program import Call, E, Loop, Program, R

from test_reference import dense_forward, small_family


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("family", ["v4-flash", "v4-pro", "v3.2", "v4-flash-quant", "v3.2-quant"])
def test_composed_torch_backend_vs_dense_oracle(family):
    """The composed program (chunks of 16 queries, so chunk boundaries cross the window and the
    compressor blocks) against the dense oracle: the same output to bf16 rounding."""
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 1, 45, "cpu", seed=11)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=16), backend="torch")
    out = fwd(**inp)
    assert _rel(out, dense_forward(spec, inp)) < 1e-2
    assert fwd.plan(45).chunk == 16


@pytest.mark.interpret
@pytest.mark.parametrize("family", ["v4-flash", "v3.2", "v4-flash-quant", "v3.2-quant", "v4-flash-bf16-scores"])
def test_composed_interpret_backend_vs_dense_oracle(family):
    """The Triton kernels (interpreter) in the composed program against the dense oracle."""
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 1, 90, "cpu", seed=5)
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", query_chunk=64), backend="interpret")
    out, idx = fwd(**inp, return_indices=True)
    assert _rel(out, dense_forward(spec, inp)) < 1e-2
    ref_out, ref_idx = csa_dsl.compile(spec, "cpu")(**inp, return_indices=True)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)


@pytest.mark.parametrize("family", ["v4-flash", "v3.2"])
def test_batch2(family):
    spec = small_family(family)
    inp = csa_dsl.random_inputs(spec, 2, 50, "cpu", seed=3)
    out = csa_dsl.compile(spec, "cpu", Schedule(query_chunk=32))(**inp)
    for b in range(2):
        one = {k: (v[b:b + 1] if v.dim() > 1 and v.shape[0] == 2 and k not in ("cmp_ape", "idx_ape") else v)
               for k, v in inp.items()}
        assert _rel(out[b:b + 1], dense_forward(spec, one)) < 1e-2


def test_edited_program_runs_as_edited():
    """fwd.execute runs exactly the program it is given: a different chunk (loop step and buffer
    sizes edited in the program) gives the same output; dropping the inverse RoPE call changes the
    output by exactly that RoPE; a JSON round trip runs identically."""
    spec = small_family("v4-flash")
    S = 100
    inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=2)
    fwd = csa_dsl.compile(spec, "cpu")
    prog = fwd.plan(S)
    base = fwd.execute(prog, **inp)

    again = Program.from_json(prog.to_json())
    assert str(again) == str(prog)
    assert torch.equal(fwd.execute(again, **inp), base)

    small = Program.from_json(prog.to_json())
    small.consts["C"] = 7                                   # loop step and chunk buffers follow C
    for b in small.buffers.values():
        if b.scope == "chunk":
            b.shape = (7,) + b.shape[1:]
    assert torch.equal(fwd.execute(small, **inp), base)

    no_rope = Program.from_json(prog.to_json())
    inner = no_rope.body[-1].body[0].body
    attend = [c for c in inner if c.op == "attention.attend"]
    assert len(attend) == 1 and attend[0].args["rope_cos"] is not None   # the inverse RoPE is the attention's
    attend[0].args.update(rope_cos=None, rope_sin=None)
    raw = fwd.execute(no_rope, **inp)
    assert not torch.equal(raw, base)
    from kernels_triton.rope.naive import rope_rows_bf16
    from pipeline.stages.compressor import rotary
    assert torch.equal(rope_rows_bf16(raw, rotary(spec.attention.inverse_rope), torch.arange(S), inverse=True,
                                      heads=True), base)


def test_interpreter_refuses_bad_programs():
    spec = small_family("v3.2")
    inp = csa_dsl.random_inputs(spec, 1, 20, "cpu")
    fwd = csa_dsl.compile(spec, "cpu")
    prog = fwd.plan(20)
    bad = Program.from_json(prog.to_json())
    bad.body[0].body[0].body[0].op = "indexer.magic"
    with pytest.raises(SpecError, match=r"unknown op 'indexer.magic'"):
        fwd.execute(bad, **inp)
    bad = Program.from_json(prog.to_json())
    bad.body[0].body[0].body[0].impl = "tpu"
    with pytest.raises(SpecError, match=r"has no 'tpu' implementation"):
        fwd.execute(bad, **inp)
    bad = Program.from_json(prog.to_json())
    bad.body[0].body[0].body[0].args["q"] = R("nowhere[b]")
    with pytest.raises(SpecError, match=r"names no buffer"):
        fwd.execute(bad, **inp)
    bad = Program.from_json(prog.to_json())
    bad.body[0].body[0].body[0].args["speed"] = 3
    with pytest.raises(SpecError, match=r"takes no argument\(s\) \['speed'\]"):
        fwd.execute(bad, **inp)
    with pytest.raises(InputError, match=r"input 'q' is \(1, 20, 4, 48\) bf16; program 'tiny-v3.2' was planned "
                                         r"for q\[1x21x"):
        fwd.execute(fwd.plan(21), **inp)


def test_program_expressions_are_a_safe_subset():
    assert E("min(s0 + C, S)").eval({"s0": 10, "C": 4, "S": 12}) == 12
    assert R("x[b, s0:s1]").eval({"x": torch.arange(12).view(2, 6), "b": 1, "s0": 2, "s1": 4}).tolist() == [8, 9]
    for bad in ("__import__('os')", "x.shape", "lambda: 1", "s0 ** 2", "open('f')"):
        with pytest.raises(SpecError, match="not allowed|must be"):
            E(bad)
    with pytest.raises(SpecError, match=r"'s9' is not defined"):
        E("s9 + 1").eval({"s0": 0})


def test_planner_bytes_v4_flash_262k():
    spec = csa_dsl.preset("v4-flash")
    S, T = 262144, 65536
    prog = compose(spec, 1, S, 2048, "cuda", overlap=False)
    b = prog.buffers
    assert b["scores"].shape == (2048, T) and b["scores"].nbytes == 512 * 2**20
    assert b["cand"].nbytes == 2048 * 4 * 1024 * 4          # CAP int32 slots for each of 4 row segments
    # the Gluon score walk keeps each row's CAP group maxima for the selection; both calls carry them
    assert b["gmax"].shape == (2048, 1024) and b["gmax"].dtype == torch.float32
    calls = {c.op: c for c in walk_calls(prog.body)}
    assert calls["indexer.score_fp8"].args["gmax"].text == calls["indexer.select"].args["gmax"].text == "gmax"
    # the bf16 variant's Gluon walk (bf16 operands) writes them too, from `indexer.score` (a ring: the overlap)
    bf16 = compose(csa_dsl.preset("v4-flash-bf16"), 1, 4096, 512, "cuda")
    bcalls = {c.op: c for c in walk_calls(bf16.body)}
    assert bcalls["indexer.score"].args["gmax"].text == bcalls["indexer.select"].args["gmax"].text == "gmax[p]"
    # not where the score is another kernel's: the CPU backends, a packed batch
    assert "gmax" not in compose(spec, 1, 4096, 512, "interpret").buffers
    assert "gmax" not in compose(spec, 1, 4096, 512, "cuda", packed=csa_dsl.Packed(4, 1024)).buffers
    assert b["keys"].shape == (2048, 640)
    assert b["kv_all"].nbytes == (S + T) * 512 * 2 and b["k_idx"].nbytes == T * 128 * 2
    assert b["out"].nbytes == planner.output_bytes(spec, 1, S) == S * 64 * 512 * 2
    m = prog.materialize_bytes
    assert m["scores [B,S,T] fp32 (after the head sum)"] == S * T * 4          # 68.7 GB
    assert m["scores [B,S,HI,T] fp32 (einsum output)"] == S * 64 * T * 4      # 4.4 TB
    assert b["rope_cos"].nbytes == b["rope_sin"].nbytes == S * 32 * 4               # the RoPE tables
    # the GPU kernels allocate nothing per call; building the RoPE tables is the one transient
    from kernels_triton.rope.tables import tables_temp_bytes
    assert prog.transient_bytes == tables_temp_bytes(S, 64)
    assert planner.plan(spec, 1, S, "cuda", 8 * 2**30, overlap=False).chunk == 2048
    # the chunk scratch scales with C: scores, group maxima, candidates, key lists, the packed queries (64 x 128
    # e4m3 + 64 scales)
    assert b["q8"].shape == (2048, 64, 128) and b["q8"].dtype == torch.float8_e4m3fn and b["q_scale"].shape == (2048, 64)
    at512 = prog.peak_bytes - (2048 - 512) * (T * 4 + 1024 * 4 + 4 * 1024 * 4 + 640 * 4 + 64 * 128 + 64 * 4)
    assert compose(spec, 1, S, 512, "cuda", overlap=False).peak_bytes == at512
    assert planner.plan(spec, 1, S, "cuda", at512, overlap=False).chunk == 512   # the largest chunk that fits
    assert planner.plan(spec, 1, S, "cuda", at512 - 1, overlap=False).chunk == 256
    # with the score overlap (the default) the ring's second buffer counts too
    ring = compose(spec, 1, S, 512, "cuda")
    assert ring.peak_bytes == at512 + 512 * (T + 1024) * 4 and ring.buffers["scores"].shape == (2, 512, T)
    assert ring.buffers["gmax"].shape == (2, 512, 1024)
    assert planner.plan(spec, 1, S, "cuda", ring.peak_bytes).chunk == 512


def test_a_program_without_chunk_buffers_runs_as_one_chunk():
    """A window-only layer has no per-chunk buffer (no scores, no key lists): on the GPU the planner gives it
    one chunk of all queries (one launch, the same peak) and says why; a CSA program keeps its chunk loop, a
    schedule's own chunk is kept, and so is the CPU backends' chunk, whose temporaries grow with it."""
    win = csa_dsl.preset("v4-window")
    prog = planner.plan(win, 1, 262144, "cuda", 8 * 2**30)
    assert prog.chunk == 262144 and prog.bytes_by_scope().get("chunk", 0) == 0
    assert prog.notes["decisions"][0].startswith("one chunk of all 262,144 queries")
    assert planner.plan(win, 1, 262144, "cuda", 8 * 2**30, query_chunk=1024).chunk == 1024
    assert planner.plan(csa_dsl.preset("v4-flash"), 1, 262144, "cuda", 8 * 2**30).chunk == 2048
    assert planner.plan(csa_dsl.preset("v4-flash-hca"), 1, 262144, "cuda", 8 * 2**30).chunk == 2048   # key lists
    # on the CPU backends the attention's temporaries grow with the chunk: the loop buys memory there, so it stays
    cpu = planner.plan(win, 1, 8192, "torch", 64 * 2**30)
    assert cpu.chunk == 256 and cpu.peak_bytes == planner.plan(win, 1, 8192, "torch", 64 * 2**30, query_chunk=256).peak_bytes


def test_planner_bounds_the_torch_temporaries():
    """On the torch backend the plan counts each stage's temporaries (the [C, HI, T] einsum, the
    attention's gathered rows): a tighter budget picks a smaller chunk, and the bound shrinks."""
    spec = csa_dsl.preset("v4-flash")
    big = planner.plan(spec, 1, 8192, "torch", 64 * 2**30)
    assert big.chunk == 256 and big.transient_bytes > 256 * 640 * 512 * 4        # gathered fp32 rows at least
    small = planner.plan(spec, 1, 8192, "torch", big.peak_bytes // 3)
    assert small.chunk < big.chunk and small.peak_bytes <= big.peak_bytes // 3


def test_planner_refuses_with_advice():
    spec = csa_dsl.preset("v4-flash")
    mem = planner.Memory("cuda:0", free=50 * 2**20, cached=30 * 2**20, held=100 * 2**30, total=141 * 2**30)
    with pytest.raises(PlanError, match=r"no plan .* fits the budget of 100\.00 MiB.*80\.00 MiB available on cuda:0 "
                                        r"\(50\.00 MiB free on the device \+ 30\.00 MiB cached free by PyTorch's "
                                        r"allocator\).*100\.00 GiB is held by this process's tensors.*raise the "
                                        r"budget to at least .*S = [\d,]+ tokens per GPU.*more GPUs"):
        planner.plan(spec, 1, 262144, "cuda", 100 * 2**20, mem=mem)
    with pytest.raises(PlanError, match=r"let the planner pick the chunk"):
        planner.plan(spec, 1, 262144, "cuda", 600 * 2**20, query_chunk=2048)
    with pytest.raises(PlanError, match=r"materialize path.*never materialises"):
        planner.plan(spec, 1, 65536, "cuda", 8 * 2**30, path="materialize")
    fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed", memory_budget="1MiB"))
    with pytest.raises(PlanError):
        fwd.plan(65536)


def test_budget_counts_the_allocators_cache(monkeypatch):
    """What the caching allocator holds in free blocks counts as available; what live tensors hold
    does not (a mocked device: 10 GiB free, 20 GiB reserved of which 5 GiB allocated)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (10 * 2**30, 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 20 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 5 * 2**30)
    mem = planner.memory("cuda:0")
    assert (mem.free, mem.cached, mem.held, mem.available) == (10 * 2**30, 15 * 2**30, 5 * 2**30, 25 * 2**30)
    assert planner.default_budget(mem, 0.8, reserve=5 * 2**30) == int(20 * 2**30 * 0.8)
    assert "25.00 GiB available on cuda:0" in mem.describe() and "5.00 GiB is held by this process" in mem.describe()


def test_a_second_call_is_planned_like_the_first():
    """A compiled pipeline keeps no tensor between calls (only profile numbers): the second plan sees
    the same memory as the first."""
    spec = small_family("v4-flash")
    inp = csa_dsl.random_inputs(spec, 1, 64, "cpu")
    fwd = csa_dsl.compile(spec, "cpu")
    fwd(**inp, profile=True)
    assert isinstance(fwd.last_profile, dict) and all(isinstance(v, float) for v in fwd.last_profile.values())
    assert not any(isinstance(v, torch.Tensor) for v in vars(fwd).values())


def test_plan_program_structure_262k():
    spec = csa_dsl.preset("v4-flash")
    prog = compose(spec, 1, 262144, 2048, "cuda")
    text = str(prog)
    assert "for s0 in range(0, S, C):  # 128 query chunks" in text and "C = 2,048" in text
    shapes = {b.name: b.shape for b in prog.buffers.values() if b.scope in ("program", "chunk")}
    assert all(not (len(s) >= 2 and s[-2:] == (262144, 65536)) for s in shapes.values())   # no [S, T]
    loop = [n for n in prog.body if isinstance(n, Loop)][0]
    # the chunk's queries packed once for the FP8 score; the output's inverse RoPE is in the attention's
    # epilogue, no op of its own
    assert [c.op for c in loop.body[0].body] == ["quant.pack_queries", "indexer.score_fp8", "indexer.select",
                                                 "attention.attend"]
    # the kv rows' FP8 step in the copy into the gather table, the keys packed once after their compressor
    assert [c.op for c in prog.body if isinstance(c, Call)] == ["rope.tables", "quant.rows", "compressor.compress",
                                                                 "compressor.compress", "quant.pack_keys"]
    bf16 = compose(csa_dsl.preset("v4-flash-bf16"), 1, 262144, 2048, "cuda")
    assert [c.op for c in bf16.body if isinstance(c, Call)] == ["rope.tables", "glue.copy", "compressor.compress",
                                                                 "compressor.compress"]
    assert prog.buffers["rope_cos"].shape == (262144, 32)          # the RoPE tables are planned buffers
    assert all(c.impl == "cuda" for c in prog.calls())
    assert prog.peak_bytes < 2 * 2**30
    ref = compose(spec, 1, 262144, 256, "cuda", path="reference")
    assert {c.impl for c in ref.calls()} == {"torch"}
    mat = compose(spec, 1, 4096, 2048, "cuda", path="materialize")
    assert mat.chunk == 4096 and mat.buffers["scores"].shape == (4096, 1024)


def test_indexer_program():
    prog = compose_indexer(64, 128, 512, 4, 2, 8192, 1024, "cuda")
    assert prog.outputs == ("ids",) and prog.buffers["ids"].shape == (2, 8192, 512)
    assert [c.op for c in prog.calls()] == ["indexer.score", "indexer.select"]


def test_visible_pairs_closed_form():
    for S, m in [(1, 1), (7, 2), (100, 1), (203, 4), (4096, 4), (1000, 8)]:
        assert visible_pairs(S, m) == sum((s + 1) // m for s in range(S))
    # the indexer work of v4-flash at S = 262,144 (semantics doc: 1.41e14 FLOP)
    assert abs(2 * 64 * 128 * visible_pairs(262144, 4) - 1.41e14) < 0.005e14


def test_progress_counts_every_chunk():
    spec = small_family("v3.2")
    inp = csa_dsl.random_inputs(spec, 2, 100, "cpu")
    fwd = csa_dsl.compile(spec, "cpu", Schedule(query_chunk=32))
    seen = []

    class Bar:
        def __init__(self, total):
            seen.append(total)

        def update(self, n):
            seen.append(n)

        def close(self):
            seen.append("closed")
    interpreter.execute(fwd.plan(100, 2), inp, "cpu", progress=Bar)
    assert seen[0] == 2 * 4 and seen[1:-1] == [1] * 8 and seen[-1] == "closed"


RSS_SCRIPT = r"""
import gc, json, resource, sys
import csa_dsl
from csa_dsl import Schedule
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
spec = csa_dsl.preset("v4-flash")
S = int(sys.argv[1])
inp = csa_dsl.random_inputs(spec, 1, S, "cpu", seed=0)
fwd = csa_dsl.compile(spec, "cpu", Schedule(path="composed"), backend="torch")
prog = fwd.plan(S)
fwd(**csa_dsl.random_inputs(spec, 1, 64, "cpu", seed=1))      # one-time library costs out of the way
gc.collect()
r0 = rss()
out = fwd.execute(prog, **inp)
print(json.dumps({"growth": rss() - r0, "peak": prog.peak_bytes, "out": out.numel() * 2, "chunk": prog.chunk}))
"""


def test_plan_bounds_the_cpu_composed_path_memory(clean_env):
    """The plan is true on the CPU too: the process's peak RSS growth during the composed forward at
    S = 4,096 stays within the plan's bound (workspace + largest transient) plus the output."""
    import json
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, "4096"], env=clean_env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["out"] <= m["growth"] <= 1.05 * (m["peak"] + m["out"]), m
