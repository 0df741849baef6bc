"""What the sparse attention computes, moves and allocates: the planner's cost model (no kernel import)."""
from __future__ import annotations

BLOCK_HEADS = 64           # the kernel pads heads to whole 64-row tiles
INDEX_STEP = 128           # ... and key lists to whole pairs of 64-key blocks
KERNEL_DIM_V = 512


def attention_flop(heads: int, dim_qk: int, dim_v: int, pairs: int) -> float:
    """2 * H * (D + Dv) per valid (query, key) pair, as FlashMLA counts."""
    return 2.0 * heads * (dim_qk + dim_v) * pairs


def attention_bytes(rows: int, heads: int, dim_qk: int, dim_v: int, keys_per_query: int) -> int:
    """q in, key lists in, out written, one gathered bf16 KV row per (query, key) (L2 may save some)."""
    return rows * (heads * dim_qk * 2 + keys_per_query * (4 + dim_qk * 2) + heads * dim_v * 2)


def kernel_temp_bytes(rows: int, heads: int, dim_qk: int, dim_v: int, keys_per_query: int) -> int:
    """The wrapper's padding copies: q and out to whole 64-head tiles (or out to the kernel's 512 value
    dims), the key list to whole 128-key steps."""
    hp = max(BLOCK_HEADS, -(-heads // BLOCK_HEADS) * BLOCK_HEADS)
    nip = max(INDEX_STEP, -(-keys_per_query // INDEX_STEP) * INDEX_STEP)
    b = 0
    if hp != heads:
        b += rows * hp * dim_qk * 2
    if hp != heads or dim_v != KERNEL_DIM_V:
        b += rows * hp * KERNEL_DIM_V * 2
    if nip != keys_per_query:
        b += rows * nip * 4
    return b


def naive_temp_bytes(rows: int, heads: int, dim_qk: int, dim_v: int, keys_per_query: int) -> int:
    """naive.attend: gathered rows (bf16, fp32 and masked), logits, exponentials and masks [n,H,NI],
    the numerator and output [n,H,Dv] fp32."""
    g = rows * keys_per_query
    return g * dim_qk * (2 + 4 + 4) + g * 8 * 2 + rows * heads * keys_per_query * 4 * 4 + rows * heads * dim_v * 4 * 3


def attended_pairs(seq_len: int, window: int, k_sel: int, ratio: int) -> int:
    """Valid (query, key) pairs of a causal forward: query s attends min(window, s+1) window rows and
    min(k_sel, (s+1) // ratio) selected rows (ratio 0: none), the work the causal bound leaves."""
    return sum(min(window, x) + (min(k_sel, x // ratio) if ratio else 0) for x in range(1, seq_len + 1))
