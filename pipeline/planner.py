"""Memory planner: what is really free, the budget, and the query chunk of a Program.

The plan's bound is the Program's own count: workspace buffers (the compressed rows for the
whole forward, the chunk scratch reused by every iteration) plus the largest transient any
single call allocates (the PyTorch stages' temporaries; the kernels' padding copies). The
planner composes the program at each candidate chunk, largest first, and keeps the first
whose bound fits the budget; when none does it refuses, saying what was free, what held the
rest and what would fit. Inputs and outputs are the caller's and counted apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from .composer import Packed, compose
from .inputs import input_bytes, output_signature, signature_bytes
from .lang import defaults
from .lang.errors import PlanError
from .lang.spec import Pipeline
from .program import Program, fmt_bytes


@dataclass(frozen=True)
class Memory:
    """Device memory as this process sees it. On CUDA, `free` is what the driver reports free and
    `cached` what PyTorch's caching allocator holds in free blocks (reserved - allocated), which a
    new tensor takes first; `held` is what this process's live tensors hold."""

    device: str
    free: int
    cached: int
    held: int
    total: int

    @property
    def available(self) -> int:
        return self.free + self.cached

    def describe(self) -> str:
        if self.device.startswith("cuda"):
            others = max(0, self.total - self.free - self.cached - self.held)
            return (f"{fmt_bytes(self.available)} available on {self.device} ({fmt_bytes(self.free)} free on the "
                    f"device + {fmt_bytes(self.cached)} cached free by PyTorch's allocator); of its "
                    f"{fmt_bytes(self.total)}, {fmt_bytes(self.held)} is held by this process's tensors and "
                    f"{fmt_bytes(others)} by others (other processes, CUDA contexts)")
        return f"{fmt_bytes(self.available)} available on {self.device} (MemAvailable of {fmt_bytes(self.total)})"


def memory(device) -> Memory:
    dev = torch.device(device)
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        reserved, allocated = torch.cuda.memory_reserved(dev), torch.cuda.memory_allocated(dev)
        return Memory(str(dev), int(free), int(max(0, reserved - allocated)), int(allocated), int(total))
    avail = total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                elif line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
    except OSError:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Memory("cpu", int(avail), 0, 0, int(total))


def output_bytes(spec: Pipeline, batch: int, seq_len: int, return_indices: bool = False,
                 longest: Optional[int] = None) -> int:
    """Bytes of the forward's outputs (inputs.output_signature; `longest` for a packed batch)."""
    return signature_bytes(output_signature(spec, batch, seq_len, return_indices, longest))


def default_budget(mem: Memory, fraction: float = defaults.BUDGET_FRACTION, reserve: int = 0) -> int:
    """A fraction of what is available now, less `reserve` bytes still to be allocated (the outputs)."""
    return int(max(0, mem.available - reserve) * fraction)


def chunk_choices(seq_len: int, backend: str, query_chunk: Optional[int] = None) -> list:
    """Chunks to try, largest first: the schedule's, or the defaults up to the backend's cap and S."""
    if query_chunk:
        return [query_chunk]
    cap = min(defaults.MAX_CHUNK[backend], max(64, -(-seq_len // 64) * 64))
    return [c for c in defaults.CHUNK_CHOICES if c <= cap] or [defaults.CHUNK_CHOICES[-1]]


def plan(spec: Pipeline, batch: int, seq_len: int, backend: str, budget: int, *, path: str = "composed",
         query_chunk: Optional[int] = None, return_indices: bool = False, mem: Optional[Memory] = None,
         packed: Optional[Packed] = None, overlap: bool = defaults.OVERLAP_SCORES) -> Program:
    """The Program of the largest chunk whose bound (workspace + transient) fits `budget`, or PlanError.
    `packed`: seq_len is the packed tokens of a varlen batch (B = 1); the bound is the packed program's.
    `overlap`: composer.compose's (a score ring counts twice the score buffer)."""
    choices = [seq_len] if path == "materialize" else chunk_choices(seq_len, backend, query_chunk)
    prog = None
    # per chunk, largest first: with the score overlap's second buffer, then without it (a smaller chunk
    # costs more than the overlap gains: benchmarks/results/overlap-h200/)
    for c in choices:
        with_ring = None
        for ov in ((True, False) if overlap else (False,)):
            prog = compose(spec, batch, seq_len, c, backend, path=path, return_indices=return_indices,
                           budget=budget, packed=packed, overlap=ov)
            if prog.peak_bytes <= budget:
                why = (f"query chunk {prog.chunk:,}: the largest of {', '.join(f'{x:,}' for x in choices)} whose "
                       f"workspace + transient ({fmt_bytes(prog.peak_bytes)}) fits the budget ({fmt_bytes(budget)})"
                       + (" without the score overlap's second buffer" if with_ring is not None and with_ring.streams
                          else "")
                       if path != "materialize" else f"one chunk of all {seq_len:,} queries")
                whole = _one_chunk(prog, spec, batch, seq_len, backend, budget, path, query_chunk, return_indices,
                                   packed, ov)
                if whole is not None:
                    prog, why = whole
                prog.notes.setdefault("decisions", []).insert(0, why)
                return prog
            with_ring = prog
    raise PlanError(_refusal(spec, batch, seq_len, backend, budget, path, query_chunk, prog, mem, overlap))


def _one_chunk(prog: Program, spec: Pipeline, batch: int, seq_len: int, backend: str, budget: int, path: str,
               query_chunk: Optional[int], return_indices: bool, packed: Optional[Packed], overlap: bool):
    """(Program, why) with all queries in one chunk, when `prog` has no per-chunk buffer (a window-only
    layer: no scores, no key lists) and one chunk peaks no higher, so the chunk loop buys no memory and costs
    a launch per chunk (each a tail of partly idle SMs: v4-window at 262,144, 128 launches 17.8 ms, one launch
    16.1 ms on an H200); None otherwise (the torch and interpreter stages' temporaries grow with the chunk)."""
    if path == "materialize" or query_chunk or prog.chunk >= seq_len or prog.bytes_by_scope().get("chunk", 0):
        return None
    whole = compose(spec, batch, seq_len, seq_len, backend, path=path, return_indices=return_indices, budget=budget,
                    packed=packed, overlap=overlap)
    if whole.peak_bytes > prog.peak_bytes or whole.bytes_by_scope().get("chunk", 0):
        return None
    return whole, (f"one chunk of all {seq_len:,} queries: the program has no per-chunk buffer, so chunks would "
                   f"only add launches")


def _refusal(spec, batch, seq_len, backend, budget, path, query_chunk, prog: Program, mem: Optional[Memory],
             overlap: bool) -> str:
    sc = prog.bytes_by_scope()
    big = max(prog.calls(), key=lambda c: c.temp_bytes, default=None)
    parts = [f"no plan for {spec.name!r} at B = {batch}, S = {seq_len:,} ({path} path, {backend} backend) fits the "
             f"budget of {fmt_bytes(budget)}: "
             + (f"even a query chunk of {prog.chunk:,} needs " if path != "materialize" else "it needs ")
             + f"{fmt_bytes(prog.peak_bytes)} ({fmt_bytes(sc.get('program', 0))} for the whole forward + "
             f"{fmt_bytes(sc.get('chunk', 0))} per chunk + {fmt_bytes(prog.transient_bytes)} transient"
             + (f" inside {big.op}@{big.impl}" if big is not None and big.temp_bytes else "") + ")."]
    if mem is not None:
        parts.append(f"Memory: {mem.describe()}.")
    hint = [f"raise the budget to at least {fmt_bytes(prog.peak_bytes)} (--budget / Schedule.memory_budget)"]
    if query_chunk:
        hint.append("let the planner pick the chunk (query_chunk=None)")
    if overlap and prog.streams:
        hint.append(f"turn the score overlap off (Schedule(overlap=False)): one score buffer instead of "
                    f"{prog.buffers['scores'].shape[0]}")
    if path == "materialize":
        hint.append("use the composed path, which never materialises the [S, T] score")
    else:
        fits = largest_fitting_seq(spec, batch, backend, budget, path, overlap)
        if fits:
            hint.append(f"run at most S = {fits:,} tokens per GPU with this budget")
        hint.append("or shard the sequence over more GPUs (context parallelism, --nproc N)")
    return " ".join(parts) + " To fit: " + "; ".join(hint) + "."


def largest_fitting_seq(spec: Pipeline, batch: int, backend: str, budget: int, path: str = "composed",
                        overlap: bool = defaults.OVERLAP_SCORES) -> int:
    """The longest sequence whose smallest-chunk program fits `budget` (0 if none)."""
    smallest = defaults.CHUNK_CHOICES[-1]
    lo, hi = 0, 1 << 30
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if compose(spec, batch, mid, smallest, backend, path=path, overlap=overlap).peak_bytes <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_fits_device(spec: Pipeline, batch: int, seq_len: int, program: Program, device,
                      have_inputs: bool) -> None:
    """Refuse before allocating when inputs (if still to be made) + outputs + the plan exceed what is available."""
    out_b = sum(b.nbytes for b in program.buffers.values() if b.scope == "output")
    in_b = 0 if have_inputs else input_bytes(spec, batch, seq_len)
    need = in_b + out_b + program.peak_bytes
    mem = memory(device)
    if need > mem.available:
        per_token = need / seq_len
        fits = int(mem.available * 0.95 / per_token) if per_token else 0
        raise PlanError(
            f"{spec.name!r} at B = {batch}, S = {seq_len:,} needs {fmt_bytes(need)} on {device} "
            f"({'inputs ' + fmt_bytes(in_b) + ' + ' if in_b else ''}outputs {fmt_bytes(out_b)} + plan "
            f"{fmt_bytes(program.peak_bytes)}) but there is {mem.describe()}. Use at most about S = {fits:,} on "
            f"this device, or shard the sequence over more GPUs (--nproc N).")
