"""What the indexer computes, moves and allocates: the planner's cost model (no kernel import)."""
from __future__ import annotations

SCORE_TILE_KEYS = 64          # the score kernel's key tile: its buffer rows are padded to it


def visible_pairs(seq_len: int, ratio: int) -> int:
    """sum over s < S of (s+1)//m: the (query, compressed row) pairs the indexer must score.

    With S = q*m + r: sum_{u=1..S} floor(u/m) = m*q*(q-1)/2 + q*(r+1)."""
    q, r = divmod(seq_len, ratio)
    return ratio * q * (q - 1) // 2 + q * (r + 1)


def score_flop(heads: int, dim: int, pairs: int) -> float:
    """2 * HI * DI per visible (query, row) pair (the MMAs; the ReLU-weighted head sum is extra)."""
    return 2.0 * heads * dim * pairs


def score_ld(rows: int) -> int:
    """Columns of the chunk's score buffer: the rows, padded to whole key tiles."""
    return max(SCORE_TILE_KEYS, -(-rows // SCORE_TILE_KEYS) * SCORE_TILE_KEYS)


def select_capacity(topk: int) -> int:
    """CAP: candidates per row in the selection (power of two >= 2K; also its group count)."""
    return max(16, 1 << (2 * topk - 1).bit_length())


# The selection's pass 2 splits a row into contiguous segments, one warp each, and each segment's candidates go to
# CAP slots of its own (kernel.py, _select_kernel). The program's threads also hold the row's CAP group maxima and,
# later, its CAP candidate slots, CAP / (32 * segments) values each: 4 segments (warps) while that is at most
# SELECT_PER_THREAD, more up to SELECT_MAX_SEGMENTS (each one more CAP slots a row of the chunk's buffer). Measured on
# an H200, top-2,048 (CAP 4,096) on the last chunk of v3.2 at 131,072: 4 warps took 217 registers a thread, two
# programs an SM, 0.85 ms; 8 warps 127 registers, 0.61 ms (then 0.49 at a register cap: kernel.SELECT_MAXNREG;
# benchmarks/results/select-warps-h200/).
SELECT_MIN_SEGMENTS = 4
SELECT_MAX_SEGMENTS = 8
SELECT_PER_THREAD = 16


def select_segments(topk: int) -> int:
    """The selection's row segments for this top-k: also its warps a program (kernel.select_launch_options)."""
    return min(SELECT_MAX_SEGMENTS, max(SELECT_MIN_SEGMENTS, select_capacity(topk) // (32 * SELECT_PER_THREAD)))


def candidate_slots(topk: int) -> int:
    """int32 candidate slots per row in the selection: CAP for each of its segments."""
    return select_segments(topk) * select_capacity(topk)


def chunk_buffer_bytes(chunk: int, rows: int, topk: int) -> dict:
    """The bounded scratch of one query chunk: fp32 scores of its visible tiles, int32 candidates."""
    return {"scores": chunk * score_ld(rows) * 4, "cand": chunk * candidate_slots(topk) * 4}


def naive_score_temp_bytes(chunk: int, rows: int, heads: int, dim: int) -> int:
    """naive.score_chunk: fp32 copies of q and k, the [chunk, HI, T] fp32 einsum, the weighted copy,
    the [chunk, T] sum and its masked copy."""
    return 4 * (chunk * heads * dim + rows * dim + 2 * chunk * heads * rows + 2 * chunk * rows)


def naive_score_fp8_temp_bytes(chunk: int, rows: int, heads: int, dim: int) -> int:
    """naive.score_chunk_fp8: the dequantised fp32 queries and keys, then naive.score_chunk's temporaries."""
    return 4 * (chunk * heads * dim + rows * dim) + naive_score_temp_bytes(chunk, rows, heads, dim)


def naive_select_temp_bytes(chunk: int, rows: int) -> int:
    """naive.select_chunk: int32 order keys, the visibility mask, int64 packed keys and top-k."""
    return chunk * rows * (4 + 4 + 1 + 8 + 8)


def interpret_score_temp_bytes(chunk: int, rows: int, heads: int, dim: int) -> int:
    """The kernel in the interpreter: fp32 copies of q and k (its tl.dot is wrong on bf16)."""
    return 4 * (chunk * heads * dim + rows * dim)


def default_chunk(rows: int, score_buffer: int, min_chunk: int) -> int:
    """Queries per chunk for the standalone indexer: a score buffer of at most `score_buffer` bytes,
    never fewer than `min_chunk` queries, at most 2,048."""
    return max(min_chunk, min(2048, score_buffer // (4 * score_ld(rows))))
