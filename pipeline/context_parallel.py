"""Context parallelism: one CSA forward sharded over the sequence on several processes/GPUs.

Assignment (causally load-balanced zig-zag): the sequence is cut into 2*W blocks of `block`
tokens (a multiple of m and of 64; the last block takes the remainder), and rank r owns blocks
r and 2W-1-r. Later queries see more keys, so pairing an early block with a late one evens the
indexer and attention work across ranks.

The transform `compose_rank` emits a rank's Program, run by the same interpreter as every
other program, from the same chunk calls (composer.chunk_calls) plus the `cp` stage's ops:
 1. halo exchange (one all-gather of each block's tail): the m tokens before each owned block
    (the overlapping compressor reads block i-1) and the W-1 raw KV rows before it (the window);
 2. compress the rows of its own blocks (RoPE at their global positions);
 3. all-gather the compressed KV rows and index keys into global order: T x (D + DI) bf16, small;
 4. per owned block, the chunk loop over its own queries at their global positions, attending
    a local KV table [window halo + own raw rows || all compressed rows].
`out` stays sharded ([B, n_local, H, Dv] in the rank's block order); `gather=True` all-gathers it
into [B, S, H, Dv]. `csa-dsl ir PRESET --level plan --nproc N [--rank R]` prints the program.

Python API for users who already have a process group: `cp_forward(...)`; `run_local` starts N
local processes (gloo on CPUs, NCCL on GPUs); or torchrun with `python -m pipeline.context_parallel`.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from .composer import (chunk_buffers, chunk_calls, kernel_names, kv_rows_call, pack_keys, program_frame, rope_tables,
                       table_args, walk_calls)
from .inputs import random_inputs, token_inputs
from .interpreter import Context, execute
from .lang import defaults
from .lang.errors import InputError, PlanError, SpecError
from .lang.spec import Indexer, Pipeline
from .planner import chunk_choices, default_budget, memory
from .program import Buffer, E, Loop, Node, Program, R, fmt_bytes
from .stages import OPS
from .stages.compressor import params as compressor_params
from .stages.compressor import role_quant


# ---------------------------------------------------------------------------------------
# assignment
def block_size(spec: Pipeline, seq_len: int, world: int) -> int:
    """Tokens per zig-zag block: a multiple of lcm(64, m), and at least the window halo, so a
    block's halo (m tokens for the compressor, W-1 rows for the window) is the previous block."""
    m = spec.ratio
    step = 64 * m // _gcd(64, m)
    per = -(-seq_len // (2 * world))
    need = max(per, spec.attention.window - 1, m, 1)
    return -(-need // step) * step


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def zigzag_blocks(spec: Pipeline, seq_len: int, world: int) -> List[List[Tuple[int, int]]]:
    """Per rank, its (start, end) token blocks in increasing order (possibly empty at tiny S)."""
    return [[b for b in _slots(spec, seq_len, world, r) if b[1] > b[0]] for r in range(world)]


def _slots(spec: Pipeline, seq_len: int, world: int, rank: int) -> List[Tuple[int, int]]:
    """Rank's two block slots (block r, block 2W-1-r), empty ones included: slot j is its halo's slot."""
    blk = block_size(spec, seq_len, world)
    return [(min(seq_len, i * blk), min(seq_len, (i + 1) * blk)) for i in (rank, 2 * world - 1 - rank)]


def _owner(block_id: int, world: int) -> Tuple[int, int]:
    """(rank, slot) holding a block."""
    return (block_id, 0) if block_id < world else (2 * world - 1 - block_id, 1)


def shard_inputs(spec: Pipeline, inputs: Dict[str, torch.Tensor], rank: int, world: int) -> Dict[str, torch.Tensor]:
    """The inputs a rank holds: its tokens of every per-token input (blocks concatenated), the rest whole."""
    S = inputs["q"].shape[1]
    blocks = zigzag_blocks(spec, S, world)[rank]
    per_token = set(token_inputs(spec))
    return {k: (torch.cat([v[:, a:b] for a, b in blocks], dim=1).contiguous() if k in per_token else v)
            for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------
# the transform: a rank's Program
def compose_rank(spec: Pipeline, batch: int, seq_len: int, world: int, rank: int, backend: str = "cuda", *,
                 chunk: Optional[int] = None, gather: bool = False, return_indices: bool = False,
                 path: str = "composed", budget: Optional[int] = None) -> Program:
    """The Program rank `rank` of `world` runs for one forward of `spec` at (batch, seq_len), `chunk`
    queries per iteration (default: the backend's largest; plan_rank fits it to a budget)."""
    if not isinstance(spec.indexer, Indexer):
        raise SpecError(f"context parallelism shards layers with a lightning indexer (CSA, DSA); {spec.name!r} has "
                        f"{'a self-index' if spec.indexer is not None else 'no indexer'} ({spec.layer.upper()} "
                        f"layer): run it on one GPU")
    chunk = chunk or defaults.MAX_CHUNK[backend]
    a, ix, c = spec.attention, spec.indexer, spec.compressor
    B, S, m = batch, seq_len, spec.ratio
    T, W, K, D = spec.num_compressed(S), a.window, spec.topk_eff(S), a.qk_dim
    slots = _slots(spec, S, world, rank)
    starts, o = [], 0
    for lo, hi in slots:
        starts.append(o)
        o += hi - lo
    n_local = o
    longest = max([hi - lo for lo, hi in slots] + [1])
    C = int(min(chunk, longest))
    hw = max(0, W - 1)
    hm = m if (c is not None and c.overlap) else 0
    impl, consts, bufs = program_frame(spec, B, S, C, backend, path, local_tokens=n_local)
    consts.update(world=world, rank=rank)

    def buf(name, shape, dtype, scope, note=""):
        bufs[name] = Buffer(name, tuple(shape), dtype, scope, note)

    out_local = "out_local" if gather else "out"
    buf(out_local, (B, n_local, a.heads, a.v_dim), torch.bfloat16, "program" if gather else "output",
        "this rank's queries, in its block order")
    if gather:
        buf("out", (B, S, a.heads, a.v_dim), torch.bfloat16, "output", "all-gathered")
    idx_local = None
    if return_indices:
        idx_local = "indices_local" if gather else "indices"
        buf(idx_local, (B, n_local, W + K), torch.int32, "program" if gather else "output",
            "key lists in the single-process numbering")
        if gather:
            buf("indices", (B, S, W + K), torch.int32, "output", "all-gathered")

    token_blocks = tuple(tuple((lo, hi - lo) for lo, hi in bl) for bl in zigzag_blocks(spec, S, world))
    body: List[Node] = []
    tab_bufs, tab_calls = rope_tables(consts, impl, S)      # global positions: every rank's RoPE reads them
    for bf in tab_bufs:
        bufs[bf.name] = bf
    body += tab_calls
    # 1. halo exchange
    comp_roles = [(r, cc) for r, cc in (("cmp", c), ("idx", ix.compressor)) if cc is not None and hm]
    tail_len = hw * D + sum(2 * hm * cc.coff * cc.dim for _, cc in comp_roles)
    buf("tails", (2, B, max(1, tail_len)), torch.float32, "program",
        f"per owned block: its last {hw} KV rows and last {hm} compressor tokens")
    buf("tails_all", (world, 2, B, max(1, tail_len)), torch.float32, "program", "every rank's tails")
    # the raw kv rows' quantisation step, once over this rank's rows (the halo tails carry quantised rows)
    kv_src = "kv"
    if a.kv_quant is not None:
        buf("kv_q", (B, n_local, D), torch.bfloat16, "program", "this rank's kv rows after their quantisation step")
        body.append(kv_rows_call(spec, impl, "kv", "kv_q", B * n_local))
        kv_src = "kv_q"
    pack = {"kv": R(kv_src), "out": R("tails")}
    for r, _ in comp_roles:
        pack.update({f"{r}_kv": R(f"{r}_kv"), f"{r}_gate": R(f"{r}_gate")})
    pack.update(blocks=tuple((st, hi - lo) for st, (lo, hi) in zip(starts, slots)), hw=hw, hm=hm)
    body.append(OPS["cp.pack_tails"].call(impl["cp.pack_tails"], pack))
    body.append(OPS["cp.all_gather"].call(impl["cp.all_gather"], {"src": R("tails"), "out": R("tails_all")},
                                          note="halo exchange"))

    # 2.-3. compressed rows: own blocks, then all-gathered in global order
    blk = block_size(spec, S, world)
    if c is not None:
        row_blocks = tuple(tuple((lo // m, hi // m - lo // m) for lo, hi in bl) for bl in zigzag_blocks(spec, S, world))
        own_rows = sum(hi // m - lo // m for lo, hi in slots)
        tail_off = hw * D
        for role, cc, own, full in (("cmp", c, "kv_own", "kv_cmp"), ("idx", ix.compressor, "k_own", "k_idx")):
            buf(own, (B, own_rows, cc.dim), torch.bfloat16, "program", "the compressed rows of this rank's blocks")
            buf(full, (B, T, cc.dim), torch.bfloat16, "program", "all compressed rows, global order")
            ro = 0
            for (lo, hi), st in zip(slots, starts):
                if hi <= lo:
                    continue
                rows = hi // m - lo // m
                bid = lo // blk
                body.append(OPS["cp.compress_block"].call(
                    impl["cp.compress_block"],
                    {"values": R(f"{role}_kv"), "gate": R(f"{role}_gate"), "ape": R(f"{role}_ape"),
                     "norm": R(f"{role}_norm"), "tails": R("tails_all"), "out": R(f"{own}[:, {ro}:{ro + rows}]"),
                     "prev": _owner(bid - 1, world) if bid > 0 else None, "start": st, "n": hi - lo,
                     "row0": lo // m, "tail_offset": tail_off, "hm": hm, **compressor_params(cc),
                     **role_quant(spec, role),
                     **table_args(consts, "rope_kv" if role == "cmp" else "rope_idx")},
                    note=f"rows {lo // m}..{hi // m} of tokens [{lo}, {hi})"))
                ro += rows
            if hm:
                tail_off += 2 * hm * cc.coff * cc.dim
            body.append(OPS["cp.gather_blocks"].call(impl["cp.gather_blocks"],
                                                     {"src": R(own), "out": R(full), "blocks": row_blocks}))
        k_name = "k_idx"
        longest_table = max(min(hw, lo) + (hi - lo) for lo, hi in slots) + T
        buf("table", (longest_table, D), torch.bfloat16, "program",
            "a block's KV table: halo rows, own rows, all compressed rows (rebuilt per block and batch row)")
    else:
        # m = 1 (V3.2): the index keys and KV rows are the raw rows; every rank needs all of them
        buf("k_idx", (B, S, ix.dim), torch.bfloat16, "program", "all index keys, global order")
        buf("kv_full", (B, S, D), torch.bfloat16, "program", "all KV rows, global order")
        body.append(OPS["cp.gather_blocks"].call(impl["cp.gather_blocks"],
                                                 {"src": R("idx_k"), "out": R("k_idx"), "blocks": token_blocks}))
        body.append(OPS["cp.gather_blocks"].call(impl["cp.gather_blocks"],
                                                 {"src": R(kv_src), "out": R("kv_full"), "blocks": token_blocks}))
        k_name = "k_idx"
    if ix.quant is not None:      # the FP8 operand of the score, from all index keys
        pbufs, pcall = pack_keys(impl, "k_idx", B, bufs["k_idx"].shape[1], ix.dim, ix.quant, ix.fp8_mma)
        bufs.update({bf.name: bf for bf in pbufs})
        body.append(pcall)
    for bf in chunk_buffers(impl, C=C, T=T, k_eff=K, topk=ix.topk, keys_width=W + K, window=W, quant=ix.quant,
                            heads=ix.heads, dim=ix.dim, fp8_mma=ix.fp8_mma):
        bufs[bf.name] = bf

    # 4. the chunk loop over each owned block's queries, at their global positions
    for j, ((lo, hi), st) in enumerate(zip(slots, starts)):
        if hi <= lo:
            continue
        n = hi - lo
        consts.update({f"A{j}": lo, f"E{j}": hi, f"L{j}": st})
        halo = min(hw, lo) if c is not None else 0
        table_len = halo + n + T
        kv_ref = f"table[0:{table_len}]" if c is not None else "kv_full[b]"
        sel_off = halo + n if c is not None else 0
        extra: List[Node] = []
        if W and c is not None:
            extra.append(OPS["cp.rebase_window"].call(impl["cp.rebase_window"],
                                                      {"ids": R(f"keys[0:s1 - s0, 0:{W}]"), "delta": -(lo - halo)}))
        inner = chunk_calls(spec, impl, T=T, C=C, q="q[b, ls:le]", idx_q="idx_q[b, ls:le]", idx_w="idx_w[b, ls:le]",
                            k=f"{k_name}[b]", kv=kv_ref, keys="keys[0:s1 - s0]", out=f"{out_local}[b, ls:le]",
                            idx_offset=sel_off, has_cand="cand" in bufs, consts=consts,
                            between_select_and_attend=extra, has_gmax="gmax" in bufs)
        if idx_local is not None:
            inner.append(OPS["cp.global_ids"].call(
                impl["cp.global_ids"], {"keys": R("keys[0:s1 - s0]"), "out": R(f"{idx_local}[b, ls:le]"), "window": W,
                                        "base": lo - halo, "sel_offset": sel_off if c is not None else 0,
                                        "seq_len": S}))
        per_b: List[Node] = []
        if c is not None:
            per_b.append(OPS["cp.kv_table"].call(
                impl["cp.kv_table"], {"tails": R("tails_all"), "kv": R(f"{kv_src}[b, L{j}:L{j} + {n}]"),
                                      "rows": R("kv_cmp[b]"), "out": R(kv_ref),
                                      "prev": _owner(lo // blk - 1, world) if lo > 0 else None, "b": E("b"),
                                      "halo": halo, "hw": hw}))
        per_b.append(Loop("s0", E(f"A{j}"), E(f"E{j}"), E("C"), inner,
                          {"s1": E(f"min(s0 + C, E{j})"), "ls": E(f"s0 - A{j} + L{j}"), "le": E(f"s1 - A{j} + L{j}")},
                          f"block {lo // blk}: queries [{lo:,}, {hi:,}), {-(-n // C):,} chunks", progress=True))
        body.append(Loop("b", E(0), E("B"), E(1), per_b))
    if gather:
        body.append(OPS["cp.gather_blocks"].call(impl["cp.gather_blocks"],
                                                 {"src": R(out_local), "out": R("out"), "blocks": token_blocks}))
        if return_indices:
            body.append(OPS["cp.gather_blocks"].call(impl["cp.gather_blocks"],
                                                     {"src": R(idx_local), "out": R("indices"),
                                                      "blocks": token_blocks}))
    all_blocks = zigzag_blocks(spec, S, world)
    notes = {"context parallelism": [f"rank {r}: blocks {bl}" for r, bl in enumerate(all_blocks)] + [
        f"block size {blk:,} tokens (a multiple of lcm(64, m) and >= the window halo)",
        "halo exchange: one all-gather of each block's last W-1 KV rows and last m compressor tokens",
        "compressed rows: each rank compresses its own blocks' rows, then one all-gather per compressor"]}
    names = sorted({x.op for x in walk_calls(body)})
    outputs = ("out", "indices") if return_indices else ("out",)
    return Program(name=f"{spec.name} [rank {rank} of {world}]", consts=consts, buffers=bufs, body=body,
                   outputs=outputs, kernels=kernel_names(names), notes=notes, budget=budget)


def plan_rank(spec: Pipeline, batch: int, seq_len: int, world: int, rank: int, backend: str, budget: int, *,
              query_chunk: Optional[int] = None, gather: bool = False, return_indices: bool = False) -> Program:
    """The rank's Program of the largest chunk whose bound fits the per-GPU budget, or PlanError."""
    longest = max(hi - lo for lo, hi in _slots(spec, seq_len, world, rank)) or 1
    prog = None
    for ch in chunk_choices(longest, backend, query_chunk):
        prog = compose_rank(spec, batch, seq_len, world, rank, backend, chunk=ch, gather=gather,
                            return_indices=return_indices, budget=budget)
        if prog.peak_bytes <= budget:
            return prog
    raise PlanError(f"context-parallel plan for {spec.name!r} at S = {seq_len:,} over {world} ranks needs "
                    f"{fmt_bytes(prog.peak_bytes)} of workspace per rank (rank {rank}), over the per-GPU budget of "
                    f"{fmt_bytes(budget)}: raise the budget, use more ranks, or a shorter sequence")


# ---------------------------------------------------------------------------------------
# running a rank
def cp_forward(spec: Pipeline, local: Dict[str, torch.Tensor], seq_len: int, group=None, backend: Optional[str] = None,
               chunk: Optional[int] = None, gather: bool = False, return_indices: bool = False,
               stats: Optional[Context] = None, budget: Optional[int] = None):
    """The forward of this rank's queries (zig-zag blocks of `seq_len`): its Program, run by the interpreter.

    local: this rank's inputs (see shard_inputs); backend: 'cuda' on CUDA tensors, 'torch' otherwise by
    default. Returns out [B, n_local, H, Dv] (or [B, S, H, Dv] with gather=True) and, with
    return_indices, the key lists in the single-process numbering, same layout. `stats` (a
    pipeline.interpreter.Context) receives the communication time and bytes."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    q = local["q"]
    dev = q.device
    n_local = sum(hi - lo for lo, hi in zigzag_blocks(spec, seq_len, world)[rank])
    if q.shape[1] != n_local:
        raise InputError(f"rank {rank}: q holds {q.shape[1]} tokens but its zig-zag blocks "
                         f"{zigzag_blocks(spec, seq_len, world)[rank]} hold {n_local}; shard the inputs with "
                         f"pipeline.context_parallel.shard_inputs")
    backend = backend or ("cuda" if q.is_cuda else "torch")
    B = q.shape[0]
    if chunk is not None:
        prog = compose_rank(spec, B, seq_len, world, rank, backend, chunk=chunk, gather=gather,
                            return_indices=return_indices)
    else:
        prog = plan_rank(spec, B, seq_len, world, rank, backend,
                         budget if budget is not None else default_budget(memory(dev)),
                         gather=gather, return_indices=return_indices)
    ctx = stats if stats is not None else Context(dev)
    ctx.device, ctx.group = dev, group
    res = execute(prog, local, dev, ctx=ctx)
    outs = tuple(res[n] for n in prog.outputs)
    return outs if return_indices else outs[0]


# ---------------------------------------------------------------------------------------
# launching: local processes (gloo on CPUs, NCCL with one GPU per rank) or torchrun
def local_random_inputs(spec: Pipeline, batch: int, seq_len: int, rank: int, world: int, device,
                        seed: int = 0) -> Dict[str, torch.Tensor]:
    """A rank's shard of random inputs, made on the rank (never the whole sequence): its tokens get
    their own stream, the replicated inputs (ape, norm, sink) the common one."""
    n_local = sum(b - a for a, b in zigzag_blocks(spec, seq_len, world)[rank])
    common = random_inputs(spec, 1, 1, device, seed=seed)
    local = random_inputs(spec, batch, max(1, n_local), device, seed=seed + 1 + rank)
    per_token = set(token_inputs(spec))
    return {k: (v[:, :n_local].contiguous() if k in per_token else common[k]) for k, v in local.items()}


def rank_main(rank: int, world: int, init: str, spec_json: str, seq_len: int, batch: int, seed: int, reps: int,
              budget: Optional[int], result_path: str) -> None:
    """One rank of `csa-dsl run/bench --nproc N`: time the forward, report per-rank figures to rank 0."""
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world
    if use_cuda:
        torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init, rank=rank, world_size=world)
    try:
        spec = Pipeline.from_json(spec_json)
        backend = "cuda" if use_cuda else "torch"
        prog = plan_rank(spec, batch, seq_len, world, rank, backend,
                         budget if budget is not None else default_budget(memory(dev)))
        local = local_random_inputs(spec, batch, seq_len, rank, world, dev, seed)
        execute(prog, local, dev, ctx=Context(dev, dist.group.WORLD))      # warm-up (compiles kernels)
        times, comm_s, comm_b, out = [], [], [], None
        for _ in range(max(1, reps)):
            ctx = Context(dev, dist.group.WORLD)
            out = None
            if use_cuda:
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
            out = execute(prog, local, dev, ctx=ctx)["out"]
            if use_cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
            comm_s.append(ctx.comm_seconds * 1e3)
            comm_b.append(ctx.comm_bytes)
        rec = {"rank": rank, "device": str(torch.cuda.get_device_name(rank)) if use_cuda else "cpu",
               "tokens": local["q"].shape[1], "blocks": zigzag_blocks(spec, seq_len, world)[rank],
               "median_ms": sorted(times)[len(times) // 2], "comm_ms": sorted(comm_s)[len(comm_s) // 2],
               "comm_bytes": comm_b[0], "chunk": prog.chunk, "planned_peak_gib": prog.peak_bytes / 2**30,
               "peak_gib": (torch.cuda.max_memory_allocated() / 2**30) if use_cuda else None,
               "nan": int(torch.isnan(out.float()).sum())}
        recs = [None] * world
        dist.all_gather_object(recs, rec)
        if rank == 0:
            with open(result_path, "w") as f:
                json.dump(recs, f)
    finally:
        dist.destroy_process_group()


def run_local(spec: Pipeline, seq_len: int, nproc: int, batch: int = 1, seed: int = 0, reps: int = defaults.REPS,
              budget: Optional[int] = None) -> List[dict]:
    """Start `nproc` local ranks and return their per-rank records."""
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as d:
        init = f"file://{os.path.join(d, 'store')}"
        res = os.path.join(d, "res.json")
        mp.spawn(rank_main, args=(nproc, init, spec.to_json(), seq_len, batch, seed, reps, budget, res),
                 nprocs=nproc, join=True)
        with open(res) as f:
            return json.load(f)


if __name__ == "__main__":
    # torchrun --nproc-per-node N -m pipeline.context_parallel PRESET SEQ: one rank per process
    import sys

    from .lang.presets import preset
    spec_ref, S = sys.argv[1], int(sys.argv[2])
    rank_, world_ = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out_path = os.path.join(tempfile.gettempdir(), "csa_cp_result.json")
    rank_main(rank_, world_, "env://", preset(spec_ref).to_json(), S, 1, 0, defaults.REPS, None, out_path)
    if rank_ == 0:
        with open(out_path) as f:
            for r in json.load(f):
                print(r)
