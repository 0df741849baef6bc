"""What the HCA key lists cost (the planner's cost model; no kernel import)."""
from __future__ import annotations


def keys_bytes(chunk: int, window: int, rows: int) -> int:
    """The kernel writes one int32 key list of window + rows slots per query and reads nothing."""
    return chunk * (window + rows) * 4


def naive_temp_bytes(chunk: int, window: int, rows: int) -> int:
    """naive.keys_chunk: the visibility mask and the id matrix [n, rows] (bool, int64), the window ids."""
    return chunk * rows * (1 + 8 + 8) + chunk * window * 8 * 3
