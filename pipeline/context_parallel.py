"""Context parallelism: one CSA forward sharded over the sequence on several processes/GPUs.

Assignment (causally load-balanced zig-zag): the sequence is cut into 2*W blocks of
`block` tokens (a multiple of m and of 64; the last block takes the remainder), and
rank r owns blocks r and 2W-1-r. Later queries see more keys, so pairing an early
block with a late one evens the indexer and attention work across ranks.

Per rank, with the inputs of its own tokens only:
 1. halo exchange (one all-gather of each block's tail): the m tokens before each
    owned block (the overlapping compressor reads block i-1) and the W-1 raw KV rows
    before it (the sliding window);
 2. compress the rows of its own blocks (RoPE at their global positions);
 3. all-gather the compressed KV rows and index keys: T x (D + DI) bf16, small;
 4. run the chunked composed loop over its own queries at their global positions,
    attending a local KV table [window halo + own raw rows || all compressed rows].
`out` stays sharded ([B, n_local, H, Dv] in the rank's block order); `gather=True`
all-gathers it into [B, S, H, Dv].

Python API for users who already have a process group: `cp_forward(...)`; launch
helpers `launch_cli` / `launch_bench` start N local processes (gloo on CPUs, NCCL on
GPUs); or use torchrun with `python -m pipeline.context_parallel`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from csa_dsl.inputs import input_signature
from csa_dsl.spec import Pipeline, SpecError

from . import reference as ref
from .ir import fmt_bytes
from .planner import CHUNK_CHOICES, PlanError, chunk_buffer_bytes, select_capacity

# inputs that are per token (sharded along S); the rest (ape, norm, sink) are replicated
TOKEN_INPUTS = ("q", "kv", "cmp_kv", "cmp_gate", "idx_q", "idx_w", "idx_kv", "idx_gate", "idx_k")


# ---------------------------------------------------------------------------------------
# assignment
def block_size(spec: Pipeline, seq_len: int, world: int) -> int:
    """Tokens per zig-zag block: a multiple of lcm(64, m), and at least the window halo, so a
    block's halo (m tokens for the compressor, W-1 rows for the window) is the previous block."""
    step = 64 * spec.ratio // _gcd(64, spec.ratio)
    per = -(-seq_len // (2 * world))
    need = max(per, spec.attention.window - 1, spec.ratio, 1)
    return -(-need // step) * step


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def zigzag_blocks(spec: Pipeline, seq_len: int, world: int) -> List[List[Tuple[int, int]]]:
    """Per rank, its (start, end) token blocks in increasing order (possibly empty at tiny S)."""
    blk = block_size(spec, seq_len, world)
    bounds = [(min(seq_len, i * blk), min(seq_len, (i + 1) * blk)) for i in range(2 * world)]
    out = []
    for r in range(world):
        mine = [bounds[r], bounds[2 * world - 1 - r]]
        out.append([b for b in mine if b[1] > b[0]])
    return out


def shard_inputs(spec: Pipeline, inputs: Dict[str, torch.Tensor], rank: int, world: int) -> Dict[str, torch.Tensor]:
    """The inputs a rank holds: its tokens of every per-token input (blocks concatenated), the rest whole."""
    S = inputs["q"].shape[1]
    blocks = zigzag_blocks(spec, S, world)[rank]
    out = {}
    for k, v in inputs.items():
        if k in TOKEN_INPUTS:
            out[k] = torch.cat([v[:, a:b] for a, b in blocks], dim=1).contiguous()
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------
# per-rank planning
def rank_workspace_bytes(spec: Pipeline, batch: int, seq_len: int, world: int, chunk: int) -> Dict[str, int]:
    T = spec.num_compressed(seq_len)
    blocks = max((sum(b - a for a, b in bl) for bl in zigzag_blocks(spec, seq_len, world)), default=0)
    W, D = spec.attention.window, spec.attention.qk_dim
    out = {
        "kv_table": batch * (blocks + 2 * max(0, W - 1) + T) * D * 2,
        "k_idx": batch * T * spec.indexer.dim * 2 if spec.indexer.compressor is not None else 0,
        "halo": world * 2 * batch * (max(0, W - 1) * D + 2 * spec.ratio * _halo_channels(spec)) * 4,
    }
    out.update(chunk_buffer_bytes(spec, seq_len, chunk))
    return out


def _halo_channels(spec: Pipeline) -> int:
    n = 0
    for c in (spec.compressor, spec.indexer.compressor):
        if c is not None:
            n += c.coff * c.dim
    return n


def plan_rank(spec: Pipeline, batch: int, seq_len: int, world: int, budget: int,
              query_chunk: Optional[int] = None) -> int:
    """The chunk a rank uses; PlanError when even the smallest does not fit the per-GPU budget."""
    choices = [query_chunk] if query_chunk else list(CHUNK_CHOICES)
    for c in choices:
        if sum(rank_workspace_bytes(spec, batch, seq_len, world, c).values()) <= budget:
            return c
    need = sum(rank_workspace_bytes(spec, batch, seq_len, world, choices[-1]).values())
    raise PlanError(f"context-parallel plan for {spec.name!r} at S = {seq_len:,} over {world} ranks needs "
                    f"{fmt_bytes(need)} of workspace per rank, over the per-GPU budget of {fmt_bytes(budget)}: "
                    f"raise the budget, use more ranks, or a shorter sequence")


# ---------------------------------------------------------------------------------------
# communication helpers (timed: comm time and bytes are reported)
@dataclass
class CommStats:
    seconds: float = 0.0
    bytes: int = 0


def _all_gather(t: torch.Tensor, group, stats: CommStats) -> List[torch.Tensor]:
    world = dist.get_world_size(group)
    outs = [torch.empty_like(t) for _ in range(world)]
    if t.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    dist.all_gather(outs, t.contiguous(), group=group)
    if t.is_cuda:
        torch.cuda.synchronize()
    stats.seconds += time.perf_counter() - t0
    stats.bytes += t.numel() * t.element_size() * (world - 1)
    return outs


# ---------------------------------------------------------------------------------------
# the per-rank forward
def cp_forward(spec: Pipeline, local: Dict[str, torch.Tensor], seq_len: int, group=None, backend=None,
               chunk: Optional[int] = None, gather: bool = False, return_indices: bool = False,
               stats: Optional[CommStats] = None):
    """The composed forward of this rank's queries (zig-zag blocks of `seq_len`).

    local: this rank's inputs (see shard_inputs); backend: a pipeline.backends object
    (default: 'cuda' on CUDA tensors, 'torch' otherwise). Returns out [B, n_local, H, Dv]
    (or [B, S, H, Dv] with gather=True) and, with return_indices, the key lists in GLOBAL
    ids ([kv (S rows) || compressed (T rows)], as the single-process forward), same layout.
    """
    from .backends import make_backend
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    stats = stats if stats is not None else CommStats()
    S, m = seq_len, spec.ratio
    a_spec, ix = spec.attention, spec.indexer
    blocks = zigzag_blocks(spec, S, world)
    mine = blocks[rank]
    q = local["q"]
    B, dev = q.shape[0], q.device
    n_local = sum(b - a for a, b in mine)
    if q.shape[1] != n_local:
        raise SpecError(f"rank {rank}: q holds {q.shape[1]} tokens but its zig-zag blocks {mine} hold {n_local}; "
                        f"shard the inputs with pipeline.context_parallel.shard_inputs")
    bk = backend if backend is not None else make_backend("cuda" if q.is_cuda else "torch")
    T, W, D = spec.num_compressed(S), a_spec.window, a_spec.qk_dim
    K = spec.topk_eff(S)
    if chunk is None:
        chunk = 2048
    # where each owned block starts in the local tensors
    starts, off = [], 0
    for a, b in mine:
        starts.append(off)
        off += b - a

    # 1. halo exchange: every rank publishes the tail of each of its two blocks
    hm = m if (spec.compressor is not None and spec.compressor.overlap) else 0
    hw = max(0, W - 1)
    tails = _pack_tails(spec, local, mine, starts, hm, hw, B, dev)
    gathered = _all_gather(tails, group, stats)
    tail_of = {}                                            # global block id -> its tail tensor
    for r in range(world):
        for j, blk_id in enumerate((r, 2 * world - 1 - r)):
            tail_of[blk_id] = gathered[r][j]
    blk_size = block_size(spec, S, world)

    # 2. compress the rows of the own blocks, 3. all-gather them
    k_idx = local.get("idx_k")
    kv_cmp = None
    if spec.compressor is not None:
        kv_rows_local, k_rows_local = [], []
        for (a, b), st in zip(mine, starts):
            blk_id = a // blk_size
            prev = tail_of.get(blk_id - 1) if blk_id > 0 else None
            kv_rows_local.append(_compress_block(spec, spec.compressor, bk, local, "cmp", a, b, st, prev, hm, hw, B))
            k_rows_local.append(_compress_block(spec, ix.compressor, bk, local, "idx", a, b, st, prev, hm, hw, B))
        kv_cmp = _gather_rows(spec, kv_rows_local, blocks, S, group, stats, D, dev, B)
        k_idx = _gather_rows(spec, k_rows_local, blocks, S, group, stats, ix.dim, dev, B)
    else:
        # m = 1 (V3.2): the index keys are raw rows; every rank needs all of them
        k_idx = _gather_blocks(local["idx_k"], blocks, S, group, stats)

    # 4. the chunk loop over the own queries
    ld = max(64, -(-T // 64) * 64) if T else 64
    scores = torch.empty(chunk, ld, dtype=torch.float32, device=dev)
    cand = torch.empty(chunk, select_capacity(ix.topk), dtype=torch.int64, device=dev)
    out = torch.empty(B, n_local, a_spec.heads, a_spec.v_dim, dtype=torch.bfloat16, device=dev)
    idx_out = torch.empty(B, n_local, W + K, dtype=torch.int32, device=dev) if return_indices else None
    keys = torch.empty(chunk, W + K, dtype=torch.int32, device=dev)
    sink = local.get("sink") if a_spec.sink else None
    full_kv = None if spec.compressor is not None else _gather_blocks(local["kv"], blocks, S, group, stats)
    for (a, b), st in zip(mine, starts):
        blk_id = a // blk_size
        for bb in range(B):
            if spec.compressor is not None:
                # local KV table: [window halo || own raw rows || all compressed rows]
                base = max(0, a - hw)
                halo_rows = a - base
                prev = tail_of.get(blk_id - 1)
                halo = _tail_kv(prev, bb, hw, D)[hw - halo_rows:] if halo_rows else local["kv"].new_empty(0, D)
                table = torch.cat([halo, local["kv"][bb, st:st + (b - a)], kv_cmp[bb]], dim=0)
                sel_off = halo_rows + (b - a)
            else:
                base, table, sel_off = 0, full_kv[bb], 0
            for s0 in range(a, b, chunk):
                n = min(chunk, b - s0)
                ls = st + (s0 - a)                        # local row of global position s0
                kv_ = keys[:n]
                if K > 0:
                    bk.score(local["idx_q"][bb, ls:ls + n], local["idx_w"][bb, ls:ls + n], k_idx[bb], s0, m, scores)
                    bk.select(scores, s0, n, m, K, ix.topk, kv_, sel_off, W, cand, T)
                elif W:
                    kv_[:, :W].copy_(ref.window_indices(torch.arange(s0, s0 + n, device=dev), W))
                if W:   # window ids are global positions: move them into the local table
                    win = kv_[:, :W]
                    win.copy_(torch.where(win >= 0, win - base, win))
                bk.attention(local["q"][bb, ls:ls + n], table, kv_, a_spec.softmax_scale, a_spec.v_dim, sink,
                             out[bb, ls:ls + n])
                if a_spec.inverse_rope is not None:
                    bk.rope(out[bb, ls:ls + n], a_spec.inverse_rope, s0)
                if idx_out is not None:
                    g = kv_.clone()
                    if W:
                        g[:, :W] = torch.where(g[:, :W] >= 0, g[:, :W] + base, g[:, :W])
                    if spec.compressor is not None:
                        g[:, W:] = torch.where(g[:, W:] >= 0, g[:, W:] - sel_off + S, g[:, W:])
                    idx_out[bb, ls:ls + n] = g
    if gather:
        out = _gather_blocks(out, blocks, S, group, stats)
        if idx_out is not None:
            idx_out = _gather_blocks(idx_out, blocks, S, group, stats)
    return (out, idx_out) if return_indices else out


def _tail_kv(prev: torch.Tensor, bb: int, hw: int, D: int) -> torch.Tensor:
    """The last hw raw KV rows of the previous block, out of its packed fp32 tail (exact for bf16)."""
    return prev[bb, : hw * D].view(hw, D).to(torch.bfloat16)


def _pack_tails(spec, local, mine, starts, hm, hw, B, dev) -> torch.Tensor:
    """[2 blocks, B, L] fp32: per owned block, its last hw KV rows and the last hm tokens of the
    compressors' values and gates (zero-padded when a block is shorter; 2 slots even if one is empty)."""
    D = spec.attention.qk_dim
    parts_len = hw * D + 2 * hm * _halo_channels(spec)
    tails = torch.zeros(2, B, max(1, parts_len), dtype=torch.float32, device=dev)
    for j, ((a, b), st) in enumerate(zip(mine, starts)):
        segs = []
        n = b - a
        kv = local["kv"][:, st:st + n]
        t = torch.zeros(B, hw, D, dtype=torch.float32, device=dev)
        take = min(hw, n)
        if take:
            t[:, hw - take:] = kv[:, n - take:].float()
        segs.append(t.reshape(B, -1))
        for pfx, c in (("cmp", spec.compressor), ("idx", spec.indexer.compressor)):
            if c is None or hm == 0:
                continue
            for name in (f"{pfx}_kv", f"{pfx}_gate"):
                v = local[name][:, st:st + n]
                t = torch.zeros(B, hm, v.shape[-1], dtype=torch.float32, device=dev)
                take = min(hm, n)
                if take:
                    t[:, hm - take:] = v[:, n - take:]
                segs.append(t.reshape(B, -1))
        flat = torch.cat(segs, dim=1)
        tails[j, :, : flat.shape[1]] = flat
    return tails


def _unpack_prev(spec, prev: torch.Tensor, bb: int, pfx: str, hm: int, hw: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The previous block's last hm tokens of `pfx`_kv and `pfx`_gate ([hm, c*D] fp32 each)."""
    D = spec.attention.qk_dim
    o = hw * D
    for p, c in (("cmp", spec.compressor), ("idx", spec.indexer.compressor)):
        if c is None:
            continue
        cd = c.coff * c.dim
        vals = prev[bb, o:o + hm * cd].view(hm, cd)
        gate = prev[bb, o + hm * cd:o + 2 * hm * cd].view(hm, cd)
        if p == pfx:
            return vals, gate
        o += 2 * hm * cd
    raise KeyError(pfx)


def _compress_block(spec, c, bk, local, pfx, a, b, st, prev, hm, hw, B) -> torch.Tensor:
    """Compressed rows whose pooled tokens lie in [a, b): rows a/m .. b/m - 1 ([B, rows, D] bf16)."""
    m = c.ratio
    r0, r1 = a // m, b // m
    out = torch.empty(B, r1 - r0, c.dim, dtype=torch.bfloat16, device=local["q"].device)
    if r1 <= r0:
        return out
    for bb in range(B):
        vals = local[f"{pfx}_kv"][bb:bb + 1, st:st + (b - a)]
        gate = local[f"{pfx}_gate"][bb:bb + 1, st:st + (b - a)]
        if hm and a > 0:
            pv, pg = _unpack_prev(spec, prev, bb, pfx, hm, hw)
            vals = torch.cat([pv[None], vals], dim=1).contiguous()
            gate = torch.cat([pg[None], gate], dim=1).contiguous()
            # local row 0 is the halo block: skip it; local row 1 is global row r0
            bk.compress(vals, gate, local[f"{pfx}_ape"], local[f"{pfx}_norm"], c, out[bb:bb + 1],
                        row_start=1, position_offset=r0 - 1)
        else:
            bk.compress(vals.contiguous(), gate.contiguous(), local[f"{pfx}_ape"], local[f"{pfx}_norm"], c,
                        out[bb:bb + 1], row_start=0, position_offset=r0)
    return out


def _gather_rows(spec, rows_local, blocks, S, group, stats, dim, dev, B) -> torch.Tensor:
    """All-gather every rank's compressed rows into the global [B, T, dim] (ordered by row id):
    a block [a, b) of tokens owns the rows [a // m, b // m)."""
    m = spec.ratio
    mine = torch.cat(rows_local, dim=1) if rows_local else torch.empty(B, 0, dim, dtype=torch.bfloat16, device=dev)
    row_blocks = [[(a // m, max(a // m, b // m)) for a, b in bl] for bl in blocks]
    return _gather_blocks(mine, row_blocks, spec.num_compressed(S), group, stats)


def _gather_blocks(x: torch.Tensor, blocks, total: int, group, stats) -> torch.Tensor:
    """All-gather [B, n_local, ...], the concatenation of each rank's (start, end) ranges of an axis of
    length `total`, into [B, total, ...] in global order (ranks pad to the longest share)."""
    cap = max(sum(b - a for a, b in bl) for bl in blocks)
    pad = x.new_zeros((x.shape[0], max(1, cap)) + tuple(x.shape[2:]))
    pad[:, : x.shape[1]] = x
    got = _all_gather(pad, group, stats)
    full = x.new_empty((x.shape[0], total) + tuple(x.shape[2:]))
    for r, bl in enumerate(blocks):
        o = 0
        for a, b in bl:
            full[:, a:b] = got[r][:, o:o + (b - a)]
            o += b - a
    return full


# ---------------------------------------------------------------------------------------
# launching: local processes (gloo on CPUs, NCCL with one GPU per rank) or torchrun
def local_random_inputs(spec: Pipeline, batch: int, seq_len: int, rank: int, world: int, device,
                        seed: int = 0) -> Dict[str, torch.Tensor]:
    """A rank's shard of random inputs, made on the rank (never the whole sequence): its tokens get
    their own stream, the replicated inputs (ape, norm, sink) the common one."""
    from csa_dsl.inputs import random_inputs
    n_local = sum(b - a for a, b in zigzag_blocks(spec, seq_len, world)[rank])
    common = random_inputs(spec, 1, 1, device, seed=seed)
    local = random_inputs(spec, batch, max(1, n_local), device, seed=seed + 1 + rank)
    out = {k: (v[:, :n_local].contiguous() if k in TOKEN_INPUTS else common[k]) for k, v in local.items()}
    return out


def _rank_main(rank: int, world: int, init: str, spec_dict: dict, seq_len: int, batch: int, seed: int,
               reps: int, budget: Optional[int], result_path: str):
    """One rank of `csa-dsl run/bench --nproc N`: time the forward, report per-rank figures to rank 0."""
    import json
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if use_cuda:
        torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init, rank=rank, world_size=world)
    try:
        spec = Pipeline.from_dict(spec_dict)
        chunk = 2048
        if budget is not None:
            chunk = plan_rank(spec, batch, seq_len, world, budget)
        local = local_random_inputs(spec, batch, seq_len, rank, world, dev, seed)
        stats = CommStats()
        cp_forward(spec, local, seq_len, chunk=chunk, stats=stats)          # warm-up (compiles kernels)
        times, comm_s, comm_b = [], [], []
        for _ in range(max(1, reps)):
            stats = CommStats()
            if use_cuda:
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
            out = cp_forward(spec, local, seq_len, chunk=chunk, stats=stats)
            if use_cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
            comm_s.append(stats.seconds * 1e3)
            comm_b.append(stats.bytes)
        rec = {"rank": rank, "device": str(torch.cuda.get_device_name(rank)) if use_cuda else "cpu",
               "tokens": local["q"].shape[1], "blocks": zigzag_blocks(spec, seq_len, world)[rank],
               "median_ms": sorted(times)[len(times) // 2], "comm_ms": sorted(comm_s)[len(comm_s) // 2],
               "comm_bytes": comm_b[0], "chunk": chunk,
               "peak_gib": (torch.cuda.max_memory_allocated() / 2**30) if use_cuda else None,
               "nan": int(torch.isnan(out.float()).sum())}
        recs = [None] * world
        dist.all_gather_object(recs, rec)
        if rank == 0:
            with open(result_path, "w") as f:
                json.dump(recs, f)
    finally:
        dist.destroy_process_group()


def run_local(spec: Pipeline, seq_len: int, nproc: int, batch: int = 1, seed: int = 0, reps: int = 3,
              budget: Optional[int] = None) -> List[dict]:
    """Start `nproc` local ranks and return their per-rank records."""
    import json
    import tempfile
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as d:
        init = f"file://{os.path.join(d, 'store')}"
        res = os.path.join(d, "res.json")
        mp.spawn(_rank_main, args=(nproc, init, spec.to_dict(), seq_len, batch, seed, reps, budget, res),
                 nprocs=nproc, join=True)
        with open(res) as f:
            return json.load(f)


def _records(spec: Pipeline, seq_len: int, nproc: int, batch: int, per_rank: List[dict]) -> List[dict]:
    from .benchmarks import base_record
    rec = base_record("composed", spec, batch, seq_len, "composed-cp")
    slowest = max(r["median_ms"] for r in per_rank)
    rec.update(nproc=nproc, median_ms=slowest, per_rank=per_rank,
               comm_ms=max(r["comm_ms"] for r in per_rank), comm_bytes=sum(r["comm_bytes"] for r in per_rank),
               peak_gib=max((r["peak_gib"] or 0) for r in per_rank) if per_rank[0]["peak_gib"] is not None else None,
               device=per_rank[0]["device"])
    return [rec]


def _print(per_rank: List[dict]) -> None:
    print(f"{'rank':>4} {'tokens':>9} {'ms':>10} {'comm ms':>9} {'comm MiB':>9} {'peak GiB':>9}  blocks")
    for r in per_rank:
        pk = f"{r['peak_gib']:.3f}" if r["peak_gib"] is not None else "-"
        print(f"{r['rank']:>4} {r['tokens']:>9,} {r['median_ms']:>10.2f} {r['comm_ms']:>9.2f} "
              f"{r['comm_bytes'] / 2**20:>9.2f} {pk:>9}  {r['blocks']}")


def launch_cli(args, spec: Pipeline) -> int:
    """`csa-dsl run ... --nproc N`."""
    from csa_dsl.schedule import parse_bytes
    seq = args.seq or (262144 if torch.cuda.is_available() else 1024)
    budget = parse_bytes(args.budget) if args.budget else None
    per_rank = run_local(spec, seq, args.nproc, args.batch, args.seed, args.reps, budget)
    print(f"context-parallel {spec.name} over {args.nproc} ranks, S = {seq:,}")
    _print(per_rank)
    if args.json:
        from .benchmarks import write_json
        write_json(_records(spec, seq, args.nproc, args.batch, per_rank), args.json)
    return 0 if all(r["nan"] == 0 for r in per_rank) else 1


def launch_bench(args, spec: Pipeline) -> int:
    """`csa-dsl bench composed --nproc N`: per-rank time, communication time and bytes, peak memory."""
    from csa_dsl.schedule import parse_bytes
    from .benchmarks import table, write_json
    seqs = args.seq or [65536, 262144]
    budget = parse_bytes(args.budget) if args.budget else None
    recs = []
    for S in seqs:
        per_rank = run_local(spec, S, args.nproc, args.batch, 0, 3, budget)
        print(f"S = {S:,}")
        _print(per_rank)
        recs += _records(spec, S, args.nproc, args.batch, per_rank)
    print(table(recs))
    if args.json:
        write_json(recs, args.json)
    return 0


if __name__ == "__main__":
    # torchrun --nproc-per-node N -m pipeline.context_parallel PRESET SEQ: one rank per process
    import sys
    from csa_dsl.specfile import load_pipeline
    spec_ref, S = sys.argv[1], int(sys.argv[2])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import tempfile
    out = os.path.join(tempfile.gettempdir(), "csa_cp_result.json")
    _rank_main(rank, world, "env://", load_pipeline(spec_ref).to_dict(), S, 1, 0, 3, None, out)
    if rank == 0:
        import json
        _print(json.load(open(out)))
