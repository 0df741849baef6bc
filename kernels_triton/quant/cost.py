"""What the quantisation kernels move and allocate (the planner's cost model; no kernel import)."""
from __future__ import annotations


def rows_bytes(rows: int, dim: int) -> int:
    """The quantising copy reads and writes every bf16 row once."""
    return 2 * rows * dim * 2


def pack_bytes(rows: int, dim: int) -> int:
    """Packed keys: FP8 values (1 B per channel) and one fp32 scale per row."""
    return rows * (dim + 4)


def naive_rows_temp_bytes(rows: int, dim: int) -> int:
    """naive.quant_dequant: fp32 copy of the rows, the blocked temporaries (about four fp32 copies), the cat."""
    return rows * dim * 4 * 6


def naive_pack_temp_bytes(rows: int, dim: int) -> int:
    """naive.pack_rows: quant_dequant's temporaries, then fp8_rows' fp32 copy and rounding temporaries."""
    return naive_rows_temp_bytes(rows, dim) + rows * dim * 4 * 4
