"""Side streams of a Program (pipeline/streams.py) and the score ring the composer builds with them."""
import pytest
import torch

import csa_dsl
from pipeline import interpreter, planner
from pipeline.composer import compose
from pipeline.inputs import random_inputs, random_packed_inputs
from pipeline.lang.errors import SpecError
from pipeline.lang.schedule import Schedule
from pipeline.program import E, Program
from pipeline.streams import Ordering, shared_buffers, span

SIDE = "score"


def test_ordering_follows_every_cross_stream_hazard():
    o = Ordering()
    a, b = ("x", 0, 100), ("x", 100, 200)
    assert o.waits(SIDE, [], [a]) == {}
    assert o.record(SIDE, [], [a]) == 0
    assert o.waits("", [a], []) == {SIDE: 0}                 # read after write
    assert o.waits("", [b], []) == {}                        # other bytes
    assert o.waits("", [("y", 0, 100)], []) == {}            # another buffer at the same addresses
    assert o.waits(SIDE, [a], [a]) == {}                     # its own stream keeps the order anyway
    o.record("", [a], [])
    assert o.waits(SIDE, [], [("x", 50, 60)]) == {"": 0}     # write after read
    o.record(SIDE, [], [b])
    assert o.waits("", [], [("x", 90, 110)]) == {SIDE: 1}    # write after write: the latest call suffices
    assert o.waits("", [], [("x", 0, 10)]) == {SIDE: 0}


def test_ordering_drops_what_a_write_covers():
    o = Ordering()
    o.record("", [], [("x", 0, 100)])
    o.record(SIDE, [("x", 0, 100)], [])
    o.record("", [], [("x", 0, 100)])        # waited for the side read: covers both earlier entries
    assert o.waits(SIDE, [("x", 0, 100)], []) == {"": 1}
    assert o.waits("", [], [("x", 0, 100)]) == {}


def test_a_score_ring_waits_only_where_the_slots_are_shared():
    """The composer's loop: score(c) on the side stream writes slot c % 2, select(c) on the caller's
    reads it. score(c) must follow select(c - 2) (same slot), never select(c - 1)."""
    o = Ordering()
    slot = [("scores", 0, 1000), ("scores", 1000, 2000)]
    main_calls = 0
    for c in range(5):
        w = o.waits(SIDE, [], [slot[c % 2]])
        assert w == ({"": 2 * (c - 2)} if c >= 2 else {})    # the main stream's call numbers: select, attend
        o.record(SIDE, [], [slot[c % 2]])
        assert o.waits("", [slot[c % 2]], []) == {SIDE: c}
        o.record("", [slot[c % 2]], [])
        o.record("", [], [("out", c, c + 1)])                # the attention: not shared, but numbered
        main_calls += 2
    assert main_calls == 10


def test_span_of_strided_views():
    t = torch.zeros(4, 6)
    assert span("t", t) == ("t", t.data_ptr(), t.data_ptr() + 24 * 4)
    col = t[:, 1]
    assert span("t", col) == ("t", t.data_ptr() + 4, t.data_ptr() + 4 + (3 * 6 + 1) * 4)
    assert span("t", t[2:2])[1] == span("t", t[2:2])[2]


def test_program_prints_and_keeps_the_streams():
    spec = csa_dsl.preset("v4-flash")
    prog = compose(spec, 1, 65536, 2048, "cuda")
    text = str(prog)
    assert "[stream score] scores[p], gmax[p] <- indexer.score_fp8@cuda(" in text
    assert "p = s0 // C % 2" in text and "overlap: each chunk's scores run on stream 'score'" in text
    assert prog.streams == ("score",) and prog.buffers["scores"].shape == (2, 2048, 16384)
    assert shared_buffers(prog) == {"scores", "gmax", "k8", "k_scale"}
    again = Program.from_json(prog.to_json())
    assert str(again) == text and again.streams == ("score",)
    off = compose(spec, 1, 65536, 2048, "cuda", overlap=False)
    assert off.streams == () and off.buffers["scores"].shape == (2048, 16384)
    assert prog.peak_bytes - off.peak_bytes == off.buffers["scores"].nbytes + off.buffers["gmax"].nbytes
    # no ring where it cannot overlap anything: one chunk, the CPU backends, no indexer
    assert compose(spec, 1, 2048, 2048, "cuda").streams == ()
    assert compose(spec, 1, 65536, 256, "interpret").streams == ()
    assert compose(csa_dsl.preset("v4-flash-hca"), 1, 65536, 2048, "cuda").streams == ()
    assert E("s0 // C % 2").eval({"s0": 6144, "C": 2048}) == 1


def _on_torch(prog: Program) -> Program:
    """The same program with every CUDA call on its reference stage (the program is data)."""
    for c in prog.calls():
        if c.impl == "cuda":
            c.impl = "torch"
    return prog


@pytest.mark.parametrize("name", ["v4-flash", "v3.2", "v4-flash-selfindex"])
def test_the_ring_program_computes_the_same(name):
    """Slot p of the ring per chunk: run in program order on the CPU it gives exactly the one-buffer
    program's outputs (on the GPU, tests/test_composed_gpu.py checks the two streams)."""
    spec = csa_dsl.preset(name)
    S, C = 640, 128
    inp = random_inputs(spec, 1, S, "cpu", seed=3)
    ring = _on_torch(compose(spec, 1, S, C, "cuda", return_indices=True))
    one = _on_torch(compose(spec, 1, S, C, "cuda", return_indices=True, overlap=False))
    assert ring.streams and not one.streams
    a = interpreter.execute(ring, inp, "cpu")
    b = interpreter.execute(one, inp, "cpu")
    assert torch.equal(a["out"], b["out"]) and torch.equal(a["indices"], b["indices"])


def test_the_packed_ring_program_computes_the_same():
    spec = csa_dsl.preset("v4-flash")
    cu, packed = random_packed_inputs(spec, [300, 0, 213, 127], "cpu", seed=4)
    progs = [_on_torch(compose(spec, 1, 640, 128, "cuda", packed=csa_dsl.Packed(4, 300), overlap=ov))
             for ov in (True, False)]
    assert progs[0].streams and "tok_seg" in shared_buffers(progs[0])
    # the program's per-token inputs carry the B = 1 axis the packed tensors leave out
    inp = {k: v if tuple(v.shape) == progs[0].buffers[k].shape else v[None] for k, v in packed.items()}
    a, b = (interpreter.execute(p, dict(inp, cu_seqlens=cu), "cpu")["out"] for p in progs)
    assert torch.equal(a, b)


def test_planner_drops_the_second_buffer_before_shrinking_the_chunk():
    spec = csa_dsl.preset("v4-flash")
    S = 262144
    ring = planner.plan(spec, 1, S, "cuda", 8 * 2**30)
    assert ring.chunk == 2048 and ring.streams
    one = compose(spec, 1, S, 2048, "cuda", overlap=False)
    p = planner.plan(spec, 1, S, "cuda", one.peak_bytes)
    assert p.chunk == 2048 and not p.streams
    assert "without the score overlap's second buffer" in p.notes["decisions"][0]
    assert not planner.plan(spec, 1, S, "cuda", 8 * 2**30, overlap=False).streams
    fwd = csa_dsl.compile(spec, "cpu", schedule=Schedule(overlap=False))
    assert fwd.schedule.overlap is False
    with pytest.raises(SpecError, match="overlap must be a bool"):
        Schedule(overlap="yes")
