"""What the segment tables cost (the planner's cost model; no kernel import)."""
from __future__ import annotations

from .naive import ROW_COLS, SEG_COLS


def table_bytes(tokens: int, rows: int) -> int:
    """tok_seg [N, 4] and row_seg [R, 2], int32."""
    return tokens * SEG_COLS * 4 + rows * ROW_COLS * 4


def segments_temp_bytes(tokens: int, rows: int) -> int:
    """naive.segments: int64 aranges, sequence ids and the stacked columns before the int32 copy."""
    return tokens * 8 * (3 + SEG_COLS) + rows * 8 * (3 + ROW_COLS)


def segments_kernel_temp_bytes(sequences: int) -> int:
    """kernel.segments: five int32 vectors of about n + 1 entries (lengths, rows per sequence, their cumsum),
    each at least one 512-byte allocator block."""
    return 5 * (-(-4 * (sequences + 1) // 512) * 512)


def local_ids_temp_bytes(tokens: int, width: int) -> int:
    """naive.local_ids: the lists in int64 and the renumbered columns."""
    return tokens * width * 8 * 3
