"""What the 1-bit self-index computes, moves and allocates (the planner's cost model; no kernel import)."""
from __future__ import annotations

WORD = 32
LIMBS = 3      # int8 limbs of a query's fixed-point head sum in the score kernel (|u| <= 2^22)


def code_bytes(rows: int, dim: int) -> int:
    """Per selectable row: D / 8 bytes of sign bits and one fp32 scale (68 B for D = 512)."""
    return rows * (dim // 8 + 4)


def score_flop(dim: int, pairs: int) -> float:
    """2 * D per visible (query, row) pair (the kernel runs it three times, once per int8 limb of the query,
    at twice the bf16 tensor-core rate)."""
    return 2.0 * dim * pairs


def naive_score_temp_bytes(chunk: int, rows: int, heads: int, dim: int) -> int:
    """naive.score_chunk: the fp32 query and its head sum, the unpacked +-1 codes (int64 bits, fp32
    signs), the [chunk, T] product and its masked copy."""
    return 4 * chunk * heads * dim + 4 * chunk * dim + rows * dim * (8 + 8 + 4) + 3 * 4 * chunk * rows


def naive_codes_temp_bytes(batch: int, rows: int, dim: int) -> int:
    """naive.codes: fp32 rows, int64 bits and their shifted copy, |K|."""
    return batch * rows * dim * (4 + 8 + 8 + 4)


def kernel_qbar_bytes(chunk: int, dim: int) -> int:
    """kernel.score_chunk on CUDA: the chunk's head-summed query as three int8 limbs and one fp32 scale a query."""
    return chunk * (LIMBS * dim + 4)


def interpret_qbar_bytes(chunk: int, heads: int, dim: int) -> int:
    """kernel.score_chunk in the interpreter: as on CUDA, plus a host copy of the chunk's q the interpreter
    makes for the head-sum kernel (counted as fp32)."""
    return kernel_qbar_bytes(chunk, dim) + chunk * heads * dim * 4
