"""Stage kind `varlen`: packed variable-length batches (docs/semantics.md section 8).

Kernels: kernels_triton/varlen/ (naive.py: the segment tables and the renumbering in tensor ops with
no host sync; kernel.py: the tables in one Triton launch, and how the other kernels read them; cost.py).
Nothing here reads a value back to the host: it all runs inside a CUDA graph. A packed program is the
B = 1 program over the N packed tokens whose every call also gets its rows of the tables:
  varlen.segments   cu_seqlens -> tok_seg [N, 4] (pos, tok0, row0, len) and row_seg [R, 2] (tok0, i)
  varlen.local_ids  the returned key lists, packed ids -> each sequence's own numbering
"""
from __future__ import annotations

from kernels_triton.varlen import cost, kernel, naive

from .base import Impl, Op, StageKind, sized

SEGMENTS = Op(
    "varlen.segments",
    "the segment tables of a packed batch: each token's position / sequence start / first row, each row's owner",
    writes=("tok_seg", "row_seg"),
    impls={"torch": Impl(naive.segments, "torch searchsorted + cumsum (no host sync)",
                         sized(cost.segments_temp_bytes, "tokens", "rows")),
           **{b: Impl(kernel.segments, "Triton: a binary search of cu_seqlens per token and per row",
                      sized(cost.segments_kernel_temp_bytes, "sequences")) for b in ("interpret", "cuda")}},
)

LOCAL_IDS = Op(
    "varlen.local_ids",
    "key lists renumbered per sequence (a B = 1 run of each sequence numbers them so)",
    writes=("ids",), updates=("ids",),
    impls={b: Impl(naive.local_ids, "torch where (in place)", sized(cost.local_ids_temp_bytes, "tokens", "width"))
           for b in ("torch", "interpret", "cuda")},
)

KIND = StageKind(kind="varlen", spec_type=type(None), doc="packed variable-length batches: segment tables",
                 ops={"segments": SEGMENTS, "local_ids": LOCAL_IDS}, inputs=lambda pipe, stage, role: {})
