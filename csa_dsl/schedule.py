"""How a pipeline runs (never what it computes): path, chunk sizes, memory budget."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .spec import SpecError

PATHS = ("auto", "composed", "materialize", "reference")


def parse_bytes(text) -> int:
    """'8GiB', '512MiB', '2e9', 1024 -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    s = str(text).strip()
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    low = s.lower()
    for u in sorted(units, key=len, reverse=True):
        if low.endswith(u):
            num = low[: -len(u)].strip()
            try:
                return int(float(num) * units[u])
            except ValueError:
                break
    try:
        return int(float(s))
    except ValueError:
        raise SpecError(f"cannot read a byte size from {text!r}; write e.g. 8GiB, 512MiB or 2e9") from None


@dataclass(frozen=True)
class Schedule:
    """Execution choices, separate from the algorithm (the Pipeline spec).

    path: 'composed' (chunked fused loop, default on CUDA), 'materialize' (naive
      baseline: full score tensor), 'reference' (exact PyTorch, default on CPU), or
      'auto'.
    query_chunk: queries per composed-loop iteration; None lets the planner choose.
    memory_budget: bytes the forward may allocate beyond its inputs and output;
      None: `budget_fraction` of the free device memory.
    reference_chunk: queries per step of the reference path (bounds its memory).
    """

    path: str = "auto"
    query_chunk: Optional[int] = None
    memory_budget: Optional[int] = None
    budget_fraction: float = 0.8
    reference_chunk: int = 128

    def __post_init__(self):
        if self.path not in PATHS:
            raise SpecError(f"Schedule.path = {self.path!r} is not one of {PATHS}")
        if self.query_chunk is not None:
            if not isinstance(self.query_chunk, int) or self.query_chunk < 64 or self.query_chunk % 64:
                raise SpecError(f"Schedule.query_chunk = {self.query_chunk!r} must be a positive multiple of 64 "
                                f"(the indexer's query tiles), or None to let the planner choose")
        if self.memory_budget is not None:
            object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget))
            if self.memory_budget <= 0:
                raise SpecError("Schedule.memory_budget must be positive")
        if not (0 < self.budget_fraction <= 1):
            raise SpecError(f"Schedule.budget_fraction must be in (0, 1], got {self.budget_fraction}")
        if not isinstance(self.reference_chunk, int) or self.reference_chunk < 1:
            raise SpecError(f"Schedule.reference_chunk must be a positive int, got {self.reference_chunk!r}")
