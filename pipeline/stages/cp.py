"""Stage kind `cp`: the communication and data movement of a context-parallel rank's program.

The ops the context-parallel transform (pipeline/context_parallel.py) emits around the usual
chunk calls: pack and all-gather each block's halo (the previous block's last tokens), compress
a block's rows with its halo, all-gather blocks of rows into global order, build a block's
local KV table, and move key ids between the table's numbering and the global one. Collectives
take the interpreter's context (its process group) and record their time and bytes there.
"""
from __future__ import annotations

import functools
import time
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from kernels_triton.compressor import kernel as compress_kernel
from kernels_triton.compressor import naive as compress_naive

from .base import Impl, Op, StageKind

Block = Tuple[int, int]                     # (local start, tokens) of an owned block


def _all_gather(t: torch.Tensor, ctx) -> list:
    world = dist.get_world_size(ctx.group)
    outs = [torch.empty_like(t) for _ in range(world)]
    if t.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    dist.all_gather(outs, t.contiguous(), group=ctx.group)
    if t.is_cuda:
        torch.cuda.synchronize()
    ctx.comm_seconds += time.perf_counter() - t0
    ctx.comm_bytes += t.numel() * t.element_size() * (world - 1)
    return outs


def pack_tails(kv: torch.Tensor, out: torch.Tensor, cmp_kv=None, cmp_gate=None, idx_kv=None, idx_gate=None, *,
               blocks: Tuple[Block, ...], hw: int, hm: int) -> None:
    """out [2, B, L] fp32 <- per owned block (in `blocks` order, zero when absent or short): its last hw raw
    KV rows, then the last hm tokens of each compressor input given (values, gate; cmp then idx)."""
    out.zero_()
    B = kv.shape[0]
    for j, (start, n) in enumerate(blocks):
        o = 0
        for src, k in ((kv, hw), (cmp_kv, hm), (cmp_gate, hm), (idx_kv, hm), (idx_gate, hm)):
            if src is None or k == 0:
                continue
            width = src.shape[-1]
            take = min(k, n)
            if take:
                seg = out[j, :, o:o + k * width].view(B, k, width)
                seg[:, k - take:] = src[:, start + n - take:start + n].float()
            o += k * width


def all_gather(src: torch.Tensor, out: torch.Tensor, ctx) -> None:
    """out [world, ...] <- every rank's src."""
    for r, t in enumerate(_all_gather(src, ctx)):
        out[r].copy_(t)


def gather_blocks(src: torch.Tensor, out: torch.Tensor, ctx, *, blocks: Tuple[Tuple[Block, ...], ...]) -> None:
    """out [B, total, ...] <- the ranks' src [B, n_local, ...], each the concatenation of its (start, length)
    ranges of the global axis, in global order (`blocks[r]` = rank r's ranges; ranks pad to the longest)."""
    cap = max(1, max(sum(n for _, n in bl) for bl in blocks))
    pad = src.new_zeros((src.shape[0], cap) + tuple(src.shape[2:]))
    pad[:, :src.shape[1]] = src
    got = _all_gather(pad, ctx)
    for r, bl in enumerate(blocks):
        o = 0
        for start, n in bl:
            out[:, start:start + n] = got[r][:, o:o + n]
            o += n


def _tail(tails: torch.Tensor, prev: Tuple[int, int], b: int, offset: int, rows: int, width: int) -> torch.Tensor:
    """rows x width of the previous block's packed tail (rank, slot) for batch element b, from `offset`."""
    r, slot = prev
    return tails[r, slot, b, offset:offset + rows * width].view(rows, width)


def _compress_block(compress, values, gate, ape, norm, tails, out, cos=None, sin=None, *,
                    prev: Optional[Tuple[int, int]], start: int, n: int, row0: int, tail_offset: int, hm: int,
                    ratio: int, overlap: bool, hadamard: bool, eps: float, quant_format: Optional[str] = None,
                    quant_block: int = 0, quant_channels: int = 0) -> None:
    """out [B, rows, D] <- the compressed rows a block of n local tokens (from `start`) owns: global rows
    row0 .. row0 + rows, RoPE'd at their global positions (cos/sin: the tables of every position). With
    `prev`, the block's first row pools the previous block's last hm tokens too (from its packed tail).
    `quant_*`: the compressor's fused quantisation step (stages.compressor.role_quant)."""
    quant = dict(quant_format=quant_format, quant_block=quant_block, quant_channels=quant_channels)
    if out.shape[1] == 0:
        return
    cd = values.shape[-1]
    for b in range(values.shape[0]):
        v, g = values[b:b + 1, start:start + n], gate[b:b + 1, start:start + n]
        if prev is not None and hm:
            v = torch.cat([_tail(tails, prev, b, tail_offset, hm, cd)[None], v], dim=1).contiguous()
            g = torch.cat([_tail(tails, prev, b, tail_offset + hm * cd, hm, cd)[None], g], dim=1).contiguous()
            # local row 0 pools the halo block alone: skip it; local row 1 is global row row0
            compress(v, g, ape, norm, ratio=ratio, overlap=overlap, hadamard=hadamard, eps=eps, cos=cos, sin=sin,
                     row_start=1, out=out[b:b + 1], position_offset=row0 - 1, **quant)
        else:
            compress(v.contiguous(), g.contiguous(), ape, norm, ratio=ratio, overlap=overlap, hadamard=hadamard,
                     eps=eps, cos=cos, sin=sin, row_start=0, out=out[b:b + 1], position_offset=row0, **quant)


# the op's two implementations: the same block logic over either compressor (named arguments only:
# the interpreter checks a call's arguments against them)
compress_block_naive = functools.partial(_compress_block, compress_naive.compress)
compress_block_kernel = functools.partial(_compress_block, compress_kernel.compress)


def kv_table(tails: torch.Tensor, kv: torch.Tensor, rows: torch.Tensor, out: torch.Tensor, *,
             prev: Optional[Tuple[int, int]], b: int, halo: int, hw: int) -> None:
    """out [halo + n + T, D] <- a block's local KV table: the `halo` raw rows before it (from the previous
    block's packed tail), its own n raw rows (kv [n, D]), then every compressed row (rows [T, D])."""
    n, D = kv.shape
    if halo:
        t = _tail(tails, prev, b, 0, hw, D)
        out[:halo] = t[hw - halo:].to(out.dtype)
    out[halo:halo + n] = kv
    out[halo + n:] = rows


def rebase_window(ids: torch.Tensor, *, delta: int) -> None:
    """ids (window ids, -1 = none) += delta in place: global token positions -> rows of a local table."""
    ids.copy_(torch.where(ids >= 0, ids + delta, ids))


def global_ids(keys: torch.Tensor, out: torch.Tensor, *, window: int, base: int, sel_offset: int,
               seq_len: int) -> None:
    """out <- key lists in the single-process numbering [kv (S rows) || compressed (T rows)]: window ids
    + base, selected rows - sel_offset + S (with a compressor; without one they are global already)."""
    g = keys.clone()
    if window:
        g[:, :window] = torch.where(g[:, :window] >= 0, g[:, :window] + base, g[:, :window])
    if sel_offset:
        g[:, window:] = torch.where(g[:, window:] >= 0, g[:, window:] - sel_offset + seq_len, g[:, window:])
    out.copy_(g)


def _all(fn, kernel: str) -> dict:
    return {b: Impl(fn, kernel) for b in ("torch", "interpret", "cuda")}


PACK_TAILS = Op("cp.pack_tails", "each owned block's halo: last W-1 raw rows and last m compressor tokens",
                writes=("out",), impls=_all(pack_tails, "copy"))
ALL_GATHER = Op("cp.all_gather", "every rank's tensor", writes=("out",), impls=_all(all_gather, "all_gather"))
GATHER_BLOCKS = Op("cp.gather_blocks", "the ranks' blocks of a sharded axis, in global order", writes=("out",),
                   impls=_all(gather_blocks, "all_gather + reorder"))
COMPRESS_BLOCK = Op("cp.compress_block", "the compressed rows a block owns, its halo prepended", writes=("out",),
                    impls={"torch": Impl(compress_block_naive, "torch naive.compress"),
                           "interpret": Impl(compress_block_kernel, "triton _compress_kernel [interpreter]"),
                           "cuda": Impl(compress_block_kernel, "triton _compress_kernel")})
KV_TABLE = Op("cp.kv_table", "a block's local KV table: halo rows, own rows, all compressed rows", writes=("out",),
              impls=_all(kv_table, "copy"))
REBASE_WINDOW = Op("cp.rebase_window", "window ids: global positions -> local table rows", writes=("ids",),
                   updates=("ids",), impls=_all(rebase_window, "torch where"))
GLOBAL_IDS = Op("cp.global_ids", "key lists in the single-process numbering", writes=("out",),
                impls=_all(global_ids, "torch where"))

KIND = StageKind(kind="cp", spec_type=type(None), doc="context-parallel communication and local tables",
                 ops={op.name.split(".")[1]: op for op in (PACK_TAILS, ALL_GATHER, GATHER_BLOCKS, COMPRESS_BLOCK,
                                                          KV_TABLE, REBASE_WINDOW, GLOBAL_IDS)},
                 inputs=lambda pipe, stage, role: {})
