"""What the compressor moves and allocates (the planner's cost model; no kernel import)."""
from __future__ import annotations


def compress_bytes(batch: int, rows: int, ratio: int, dim: int, overlap: bool) -> int:
    """The kernel reads both fp32 inputs of the pooled tokens once and writes bf16 rows."""
    coff = 2 if overlap else 1
    return 2 * batch * rows * ratio * coff * dim * 4 + batch * rows * dim * 2


def compress_flop(batch: int, rows: int, ratio: int, dim: int, overlap: bool, hadamard: bool) -> int:
    """exp, multiply-add per pooled slot and channel; RMSNorm, RoPE; the Hadamard as a two-stage sum."""
    slots = ratio * (2 if overlap else 1)
    had = 2 * dim * (2 * int(dim ** 0.5)) if hadamard else 0
    return batch * rows * (dim * slots * 4 + dim * 6 + had)


def naive_temp_bytes(batch: int, rows: int, ratio: int, dim: int, overlap: bool, row_chunk: int = 4096) -> int:
    """naive.compress per row chunk: fp32 copies of the slots' values and logits, their softmax weights and
    product, and a few [rows, D] fp32 rows (pool, norm, RoPE)."""
    slots = ratio * (2 if overlap else 1)
    r = min(rows, row_chunk)
    return batch * r * dim * (slots * 4 * 5 + 4 * 8) + dim * dim * 4
