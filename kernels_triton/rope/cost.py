"""What the in-place RoPE moves and allocates (the planner's cost model; no kernel import)."""
from __future__ import annotations


def rope_bytes(rows: int, heads: int, rot_dim: int) -> int:
    """The kernel reads and writes the last rot_dim bf16 channels of every (row, head)."""
    return 2 * rows * heads * rot_dim * 2


def naive_temp_bytes(rows: int, heads: int, v_dim: int, rot_dim: int) -> int:
    """naive.rope_: a bf16 clone of the rows, fp32 pair halves and their rotation, the cos/sin tables."""
    return rows * heads * (v_dim * 2 + rot_dim * 4 * 4) + rows * rot_dim * 4 * 2
