"""Memory planner: from (spec, B, S, budget) pick the query chunk, list every buffer, refuse what cannot fit.

Workspace = program buffers (live for the whole forward: compressed rows, index
keys) + chunk buffers (reused each loop iteration: score chunk, top-k candidates,
key lists). Inputs and the output are the caller's and are counted separately.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch

from csa_dsl.inputs import input_bytes
from csa_dsl.spec import Pipeline, SpecError

from kernels_triton.indexer import chunk_buffer_bytes as indexer_chunk_bytes
from kernels_triton.indexer import select_capacity  # noqa: F401  (re-exported for the composer)

from .ir import fmt_bytes

CHUNK_CHOICES = (2048, 1024, 512, 256, 128, 64)


class PlanError(SpecError):
    """No plan fits the memory budget; the message says what would."""


def visible_pairs(seq_len: int, ratio: int) -> int:
    """sum over s < S of (s+1)//m: the (query, compressed row) pairs the indexer must score.

    With S = q*m + r: sum_{u=1..S} floor(u/m) = m*q*(q-1)/2 + q*(r+1).
    """
    q, r = divmod(seq_len, ratio)
    return ratio * q * (q - 1) // 2 + q * (r + 1)


def chunk_buffer_bytes(spec: Pipeline, seq_len: int, chunk: int) -> Dict[str, int]:
    """The chunk-scope scratch: the indexer's (scores, candidates) and the key lists."""
    out = indexer_chunk_bytes(chunk, spec.num_compressed(seq_len), spec.indexer.topk)
    out["keys"] = chunk * spec.index_width(seq_len) * 4
    return out


def program_buffer_bytes(spec: Pipeline, batch: int, seq_len: int) -> Dict[str, int]:
    T = spec.num_compressed(seq_len)
    out = {}
    if spec.compressor is not None:
        out["kv_all"] = batch * (seq_len + T) * spec.attention.qk_dim * 2
    if spec.indexer.compressor is not None:
        out["k_idx"] = batch * T * spec.indexer.dim * 2
    return out


def output_bytes(spec: Pipeline, batch: int, seq_len: int) -> int:
    return batch * seq_len * spec.attention.heads * spec.attention.v_dim * 2


def workspace_bytes(spec: Pipeline, batch: int, seq_len: int, chunk: int) -> int:
    return sum(program_buffer_bytes(spec, batch, seq_len).values()) + \
        sum(chunk_buffer_bytes(spec, seq_len, chunk).values())


def materialize_bytes(spec: Pipeline, batch: int, seq_len: int) -> Dict[str, int]:
    """What the naive schedule of the public reference code holds at once (beyond inputs)."""
    T = spec.num_compressed(seq_len)
    hi = spec.indexer.heads
    return {
        "scores [B,S,HI,T] fp32 (einsum output)": batch * seq_len * hi * T * 4,
        "scores [B,S,T] fp32 (after the head sum)": batch * seq_len * T * 4,
        "causal half of [B,S,T] fp32": batch * seq_len * T * 2,
    }


def available_bytes(device) -> int:
    """Free memory of the device (CUDA: mem_get_info; CPU: MemAvailable)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_budget(device, fraction: float = 0.8, reserve: int = 0) -> int:
    """A safe fraction of what is free now, less `reserve` bytes still to be allocated (e.g. the output)."""
    return int(max(0, available_bytes(device) - reserve) * fraction)


def choose_chunk(spec: Pipeline, batch: int, seq_len: int, budget: int, query_chunk: Optional[int] = None) -> int:
    """The largest query chunk (<= 2048, <= S rounded up to 64) whose workspace fits `budget`."""
    cap = max(64, -(-seq_len // 64) * 64)
    choices = [query_chunk] if query_chunk else [c for c in CHUNK_CHOICES if c <= cap] or [64]
    for c in choices:
        if workspace_bytes(spec, batch, seq_len, c) <= budget:
            return c
    smallest = choices[-1]
    need = workspace_bytes(spec, batch, seq_len, smallest)
    prog = sum(program_buffer_bytes(spec, batch, seq_len).values())
    per_chunk = sum(chunk_buffer_bytes(spec, seq_len, smallest).values())
    fits_s = _largest_fitting_seq(spec, batch, budget, smallest)
    hint = [f"raise the budget to at least {fmt_bytes(need)} (--budget / Schedule.memory_budget)"]
    if query_chunk:
        hint.append("let the planner pick the chunk (query_chunk=None)")
    if fits_s:
        hint.append(f"run at most S = {fits_s:,} tokens per GPU with this budget")
    hint.append("or shard the sequence over more GPUs (context parallelism, --nproc N)")
    raise PlanError(
        f"no plan for {spec.name!r} at B = {batch}, S = {seq_len:,} fits the budget of {fmt_bytes(budget)}: "
        f"even a query chunk of {smallest} needs {fmt_bytes(need)} of workspace "
        f"({fmt_bytes(prog)} for the whole forward + {fmt_bytes(per_chunk)} per chunk). "
        + "; ".join(hint) + ".")


def _largest_fitting_seq(spec: Pipeline, batch: int, budget: int, chunk: int) -> int:
    lo, hi = 0, 1 << 30
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if workspace_bytes(spec, batch, mid, min(chunk, max(64, -(-mid // 64) * 64))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_fits_device(spec: Pipeline, batch: int, seq_len: int, device, chunk: int, have_inputs: bool) -> None:
    """Refuse before allocating when inputs (if still to be made) + output + workspace exceed free memory."""
    need = output_bytes(spec, batch, seq_len) + workspace_bytes(spec, batch, seq_len, chunk)
    if not have_inputs:
        need += input_bytes(spec, batch, seq_len)
    free = available_bytes(device)
    if need > free:
        per_token = need / seq_len
        fits = int(free * 0.95 / per_token) if per_token else 0
        raise PlanError(
            f"{spec.name!r} at B = {batch}, S = {seq_len:,} needs {fmt_bytes(need)} on {device} "
            f"({'inputs ' + fmt_bytes(input_bytes(spec, batch, seq_len)) + ' + ' if not have_inputs else ''}"
            f"output {fmt_bytes(output_bytes(spec, batch, seq_len))} + workspace "
            f"{fmt_bytes(workspace_bytes(spec, batch, seq_len, chunk))}) but only {fmt_bytes(free)} is free: "
            f"use at most about S = {fits:,} on this device, or shard the sequence over more GPUs (--nproc N).")
