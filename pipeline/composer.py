"""The composer: turns a Pipeline spec into a composed program (pipeline IR).

The program is a loop over query chunks in which
  (a) the compressed rows every chunk may see already exist: both compressors run
      once ahead of the loop (their outputs, T x (D + DI) bf16, are 80 MiB at
      S = 262,144 for v4-flash, and chunk c needs all rows up to its last query,
      so fusing them into the loop would only re-read their inputs);
  (b) the indexer scores only the visible key tiles of the chunk into a bounded
      [chunk, T] buffer and the partial top-k selects from it right away;
  (c) the sparse attention consumes the chunk's key lists at once and writes its
      rows of `out`; the inverse RoPE runs in place on those rows.
The [S, T] score tensor never exists.
"""
from __future__ import annotations

from typing import List

import torch

from csa_dsl.spec import Pipeline

from .ir import Buffer, Call, Loop, Node, Program
from .planner import chunk_buffer_bytes, materialize_bytes, select_capacity, visible_pairs


def _kernels(backend: str) -> dict:
    if backend == "cuda":
        return {
            "compress": "triton compress_kernel",
            "score": "triton _score_kernel",
            "select": "triton _select_kernel",
            "attention": "tilelang sparse_mla_fwd",
            "rope": "triton rope_kernel (in place)",
            "copy": "cudaMemcpy",
        }
    if backend == "interpret":
        return {
            "compress": "triton compress_kernel [interpreter]",
            "score": "triton _score_kernel [interpreter]",
            "select": "triton _select_kernel [interpreter]",
            "attention": "torch reference sparse_attention",
            "rope": "triton rope_kernel [interpreter]",
            "copy": "copy",
        }
    return {
        "compress": "torch reference compress",
        "score": "torch reference indexer_scores",
        "select": "torch reference topk_select",
        "attention": "torch reference sparse_attention",
        "rope": "torch reference rope",
        "copy": "copy",
    }


def compose(spec: Pipeline, batch: int, seq_len: int, chunk: int, backend: str = "cuda",
            budget: int | None = None) -> Program:
    a, ix, c = spec.attention, spec.indexer, spec.compressor
    B, S, m = batch, seq_len, spec.ratio
    T = spec.num_compressed(S)
    W, K = a.window, spec.topk_eff(S)
    kn = _kernels(backend)
    bufs = {}

    def buf(name, shape, dtype, scope, note=""):
        bufs[name] = Buffer(name, tuple(int(d) for d in shape), dtype, scope, note)

    # inputs and output (the caller's)
    buf("q", (B, S, a.heads, a.qk_dim), torch.bfloat16, "input")
    buf("kv", (B, S, a.qk_dim), torch.bfloat16, "input")
    buf("idx_q", (B, S, ix.heads, ix.dim), torch.bfloat16, "input")
    buf("idx_w", (B, S, ix.heads), torch.float32, "input")
    if c is not None:
        buf("cmp_kv", (B, S, c.coff * c.dim), torch.float32, "input")
        buf("cmp_gate", (B, S, c.coff * c.dim), torch.float32, "input")
    if ix.compressor is not None:
        ic = ix.compressor
        buf("idx_kv", (B, S, ic.coff * ic.dim), torch.float32, "input")
        buf("idx_gate", (B, S, ic.coff * ic.dim), torch.float32, "input")
    else:
        buf("idx_k", (B, S, ix.dim), torch.bfloat16, "input")
    buf("out", (B, S, a.heads, a.v_dim), torch.bfloat16, "output")

    # program scope: compressed rows, made once ahead of the loop
    body: List[Node] = []
    fused: List[str] = []
    decisions: List[str] = []
    if c is not None:
        buf("kv_all", (B, S + T, a.qk_dim), torch.bfloat16, "program",
            "rows [0,S): kv; rows [S,S+T): compressed kv (one gather table for the attention)")
        body.append(Call("copy_kv", "glue", kn["copy"], ["kv"], ["kv_all[:, :S]"]))
        body.append(Call("compress_kv", "compressor", kn["compress"],
                         ["cmp_kv", "cmp_gate", "cmp_ape", "cmp_norm"], ["kv_all[:, S:]"],
                         f"T = S // {m} = {T:,} rows, written in place next to kv"))
    kv_name = "kv_all" if c is not None else "kv"
    if ix.compressor is not None:
        buf("k_idx", (B, T, ix.dim), torch.bfloat16, "program", "index keys (Hadamard-rotated)"
            if ix.compressor.hadamard else "index keys")
        body.append(Call("compress_idx", "compressor", kn["compress"],
                         ["idx_kv", "idx_gate", "idx_ape", "idx_norm"], ["k_idx"]))
        k_name = "k_idx"
    else:
        k_name = "idx_k"
    if c is not None:
        decisions.append(f"compressors run once ahead of the loop: their outputs are small "
                         f"({(bufs['kv_all'].nbytes - B * S * a.qk_dim * 2 + bufs['k_idx'].nbytes) / 2**20:.1f} MiB) "
                         f"and every chunk needs all rows up to its last query")

    # chunk scope: the bounded scratch reused by every iteration
    cb = chunk_buffer_bytes(spec, S, chunk)
    ld = cb["scores"] // (4 * chunk)
    buf("scores", (chunk, ld), torch.float32, "chunk",
        "fp32 scores of the chunk's visible key tiles only (never [S, T])")
    buf("cand", (chunk, select_capacity(ix.topk)), torch.int64, "chunk", "top-k candidates (value, index) per row")
    buf("keys", (chunk, W + K), torch.int32, "chunk", f"key lists: {W} window rows + {K} selected rows")

    off = spec.selected_offset(S)
    inner: List[Node] = [
        Call("score", "indexer", kn["score"],
             [f"idx_q[b, s0:s0+C]", f"idx_w[b, s0:s0+C]", f"{k_name}[b, :(s0+C)//{m}]"],
             ["scores[:C, :vis]"],
             "visible 64-key tiles only; diagonal tiles masked in-kernel"),
        Call("select", "topk", kn["select"], ["scores[:C, :vis]"],
             [f"keys[:C, :{W + K}]"],
             (f"window ids max(0, s-{W - 1})..s, then " if W else "")
             + f"top-{K}: group-max threshold, compaction, radix select; ids + {off}, -1 padded"),
    ]
    att_reads = [f"q[b, s0:s0+C]", f"{kv_name}[b]", "keys[:C]"] + (["sink"] if a.sink else [])
    inner.append(Call("attention", "attention", kn["attention"], att_reads, ["out[b, s0:s0+C]"],
                      f"{a.heads} heads, {W + K} keys/query, scale {a.softmax_scale:.4g}"))
    if a.inverse_rope is not None:
        inner.append(Call("inverse_rope", "attention", kn["rope"], ["out[b, s0:s0+C]"],
                          [f"out[b, s0:s0+C, :, -{a.inverse_rope.dim}:]"], "at the query positions"))
    body.append(Loop("b", "0", str(B), "1", [
        Loop("s0", "0", f"{S:,}", f"C = {chunk:,}", inner, f"{-(-S // chunk):,} query chunks")]))

    fused.append("indexer score -> top-k: per chunk through a bounded score buffer "
                 f"({bufs['scores'].nbytes / 2**20:.1f} MiB), no [S, T] tensor")
    fused.append("top-k -> attention: the chunk's key lists are consumed in the same iteration")
    if W and backend != "torch":
        fused.append("window ids -> top-k: the selection kernel writes each key list's window part too")
    if a.inverse_rope is not None:
        fused.append("attention -> inverse RoPE: in place on the chunk's output rows")
    decisions.append(f"query chunk {chunk:,}: the largest that fits the budget (planner), capped at 2,048 "
                     f"(larger chunks add memory, not speed)")
    decisions.append("causal: each chunk scores only key tiles visible to its last query "
                     f"(~{visible_pairs(S, m) / max(1, S * T):.0%} of the [S, T] rectangle)")
    return Program(name=spec.name, batch=B, seq_len=S, chunk=chunk, buffers=bufs, body=body, fused=fused,
                   decisions=decisions, materialize_bytes=materialize_bytes(spec, B, S), budget=budget)

