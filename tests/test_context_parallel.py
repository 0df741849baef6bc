"""Context parallelism: gloo ranks on the CPU against the single-process forward; planning per rank."""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import csa_dsl
from pipeline import context_parallel as cp
from pipeline.lang.errors import PlanError

from test_reference import small_family


def _worker(rank, world, store, name, S, B, res):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_reference import small_family as fam
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        spec = fam(name)
        inp = csa_dsl.random_inputs(spec, B, S, "cpu", seed=S)
        local = cp.shard_inputs(spec, inp, rank, world)
        out_l, idx_l = cp.cp_forward(spec, local, S, chunk=64, return_indices=True)   # sharded
        out, idx = cp.cp_forward(spec, local, S, chunk=64, gather=True, return_indices=True)
        torch.save({"out_l": out_l, "idx_l": idx_l, "out": out, "idx": idx}, f"{res}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name,S,B,world", [
    ("v4-flash", 256, 1, 2),      # even S
    ("v4-flash", 203, 2, 3),      # uneven S (the last block is short), B = 2, 3 ranks
    ("v4-pro", 330, 1, 3),
    ("v3.2", 150, 1, 2),          # m = 1, no window: the index keys are all-gathered raw rows
    ("v4-flash-quant", 203, 2, 3),  # the quantisation steps: kv rows per rank, compressors, packed keys
    ("v3.2-quant", 150, 1, 2),
    ("v4-flash-bf16-scores", 203, 1, 2),   # the official code's bf16 index score on every rank
])
def test_cp_matches_single_process(name, S, B, world):
    spec = small_family(name)
    inp = csa_dsl.random_inputs(spec, B, S, "cpu", seed=S)
    exp_out, exp_idx = csa_dsl.compile(spec, "cpu")(**inp, return_indices=True)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(world, os.path.join(d, "store"), name, S, B, os.path.join(d, "res")),
                 nprocs=world, join=True)
        res = [torch.load(os.path.join(d, f"res.{r}")) for r in range(world)]
    for r in range(world):
        assert torch.equal(res[r]["idx"], exp_idx), f"rank {r}: index lists differ"
        assert (res[r]["out"].float() - exp_out.float()).abs().max() <= 1e-6   # fp32 rounding (same ops here)
        # the sharded output holds exactly the rank's zig-zag blocks
        blocks = cp.zigzag_blocks(spec, S, world)[r]
        mine = torch.cat([exp_out[:, a:b] for a, b in blocks], dim=1)
        assert torch.equal(res[r]["out_l"], mine)


def test_zigzag_assignment():
    spec = csa_dsl.preset("v4-flash")
    S, W = 1 << 20, 4
    blocks = cp.zigzag_blocks(spec, S, W)
    assert blocks[0] == [(0, 131072), (917504, 1048576)]
    covered = sorted(x for bl in blocks for x in bl)
    assert covered[0][0] == 0 and covered[-1][1] == S
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    # causal load balance: every rank's visible (query, row) pairs within 1% of the mean
    work = [sum(((torch.arange(a, b) + 1) // 4).sum().item() for a, b in bl) for bl in blocks]
    assert max(work) / min(work) < 1.01
    # blocks are multiples of lcm(64, m) and at least the window
    assert all((b - a) % 64 == 0 for bl in blocks for a, b in bl[:-1])
    assert cp.block_size(spec, 300, 8) >= spec.attention.window - 1


def test_cp_planner_per_rank():
    spec = csa_dsl.preset("v4-flash")
    S = 1 << 20
    one = cp.compose_rank(spec, 1, S, 1, 0, "cuda", chunk=2048)
    eight = cp.compose_rank(spec, 1, S, 8, 3, "cuda", chunk=2048)
    assert eight.peak_bytes < one.peak_bytes
    assert eight.buffers["q"].shape[1] == 2 * cp.block_size(spec, S, 8) == S // 8
    assert cp.plan_rank(spec, 1, S, 8, 3, "cuda", 4 * 2**30).chunk == 2048
    with pytest.raises(PlanError, match=r"over 8 ranks needs .* per rank \(rank 3\), over the per-GPU budget"):
        cp.plan_rank(spec, 1, S, 8, 3, "cuda", 100 * 2**20)


def test_rank_program_prints_its_communication():
    """The rank's program is printable like any other: the halo exchange, the compressors of its own
    blocks, the all-gathers and one chunk loop per owned block, on the same chunk calls."""
    spec = csa_dsl.preset("v4-flash")
    text = str(cp.compose_rank(spec, 1, 262144, 4, 1, "cuda", chunk=2048))
    for piece in ("cp.pack_tails@cuda", "cp.all_gather@cuda", "cp.compress_block@cuda", "cp.gather_blocks@cuda",
                  "cp.kv_table@cuda", "cp.rebase_window@cuda", "indexer.score_fp8@cuda", "attention.attend@cuda",
                  "rank 1: blocks [(32768, 65536), (196608, 229376)]", "for s0 in range(A0, E0, C)"):
        assert piece in text, piece


@pytest.mark.gpu
def test_world_size_one_gpu_matches_composed():
    """World size 1 through the same code path on one GPU matches the plain composed forward."""
    import socket
    spec = csa_dsl.preset("v4-flash")
    S = 8192
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=5)
    exp_out, exp_idx = csa_dsl.compile(spec, "cuda")(**inp, return_indices=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        out, idx = cp.cp_forward(spec, cp.shard_inputs(spec, inp, 0, 1), S, return_indices=True)
    finally:
        dist.destroy_process_group()
    assert torch.equal(idx, exp_idx)
    assert (out.float() - exp_out.float()).abs().max() == 0
