"""How a pipeline runs (never what it computes): path, query chunk, memory budget, input check,
streams.

Every path is a schedule of the same stages, composed into one Program and run by one
interpreter: 'composed' (the chunked fused loop on the device's kernels), 'reference' (the
same loop on the exact PyTorch stages) and 'materialize' (the naive baseline: one chunk of
all S queries, so the [S, T] score tensor exists, as in the public reference code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import defaults
from .errors import SpecError

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

    path: 'composed' (default on CUDA), 'reference' (exact PyTorch stages, default on CPU),
      'materialize' (naive baseline), or 'auto'.
    query_chunk: queries per loop iteration; None lets the planner choose from the budget.
    memory_budget: bytes the forward may allocate beyond its inputs and output (workspace plus
      the largest transient of any call); None: `budget_fraction` of the memory available now.
    check_inputs: scan every floating input for NaN/Inf before any launch and name the tensor
      and the first bad position (one extra read of the inputs; on by default in the CLI). Off,
      non-finite values propagate as the semantics say (docs/semantics.md, section 9).
    overlap: on CUDA, issue each chunk's indexer scores on a side stream into a ring of two score
      buffers, so chunk c+1's scores run while chunk c is selected and attended (twice the score
      buffer's memory; the planner counts it). False: one buffer, every call on the caller's stream.
    """

    path: str = "auto"
    query_chunk: Optional[int] = None
    memory_budget: Optional[int] = None
    budget_fraction: float = defaults.BUDGET_FRACTION
    check_inputs: bool = False
    overlap: bool = defaults.OVERLAP_SCORES

    def __post_init__(self):
        if self.path not in PATHS:
            raise SpecError(f"Schedule.path = {self.path!r} is not one of {PATHS}")
        if self.query_chunk is not None:
            if not isinstance(self.query_chunk, int) or isinstance(self.query_chunk, bool) or self.query_chunk < 1:
                raise SpecError(f"Schedule.query_chunk = {self.query_chunk!r} must be a positive int (the planner "
                                f"picks multiples of 64, the score kernel's query tiles), or None to let it choose")
        if self.memory_budget is not None:
            object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget))
            if self.memory_budget <= 0:
                raise SpecError(f"Schedule.memory_budget must be positive, got {self.memory_budget}")
        if not (isinstance(self.budget_fraction, (int, float)) and 0 < self.budget_fraction <= 1):
            raise SpecError(f"Schedule.budget_fraction must be in (0, 1], got {self.budget_fraction!r}")
        if not isinstance(self.check_inputs, bool):
            raise SpecError(f"Schedule.check_inputs must be a bool, got {self.check_inputs!r}")
        if not isinstance(self.overlap, bool):
            raise SpecError(f"Schedule.overlap must be a bool, got {self.overlap!r}")
