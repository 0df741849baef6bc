"""The sliding-window part of a key list, shared by every kernel that writes key lists."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def store_window(orow, s, base, W: tl.constexpr, WP: tl.constexpr):
    """orow[0:W] = base + (max(0, s-W+1) .. s) in order, -1 padded at the end for s < W-1 (WP: W rounded
    up to a power of two; base: the sequence's first token in a packed batch, else 0)."""
    wj = tl.arange(0, WP)
    wid = tl.maximum(s - W + 1, 0) + wj
    tl.store(orow + wj, tl.where(wid > s, -1, wid + base), mask=wj < W)


def window_pow2(window: int) -> int:
    return max(1, 1 << (max(window, 1) - 1).bit_length())
