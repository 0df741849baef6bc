"""The composed program as data: buffers, kernel calls and loops (a small pipeline IR).

The composer builds a `Program`; the runtime executes it; `str(program)` prints the
loop nest with every buffer's shape, dtype and bytes (Halide's print_loop_nest is
the model), beside the bytes a materialising schedule would need.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch


def fmt_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PiB"


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64"}


@dataclass
class Buffer:
    """A tensor the program reads or allocates. `scope`: input | output | program (lives for the
    whole forward) | chunk (reused by every loop iteration)."""

    name: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    scope: str
    note: str = ""

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty(0, dtype=self.dtype).element_size()

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        return f"{self.name}[{shape}] {_DTYPE_NAMES.get(self.dtype, str(self.dtype))}"


@dataclass
class Call:
    """One kernel launch (or host op) of a stage."""

    op: str            # runtime op name, e.g. "indexer.score"
    stage: str         # compressor | indexer | topk | attention | glue
    kernel: str        # what runs, e.g. "triton _score_kernel"
    reads: List[str]
    writes: List[str]
    note: str = ""
    args: Dict[str, object] = field(default_factory=dict)


@dataclass
class Loop:
    var: str
    start: str
    stop: str
    step: str
    body: List[Union["Loop", Call]]
    note: str = ""


Node = Union[Loop, Call]


@dataclass
class Program:
    name: str
    batch: int
    seq_len: int
    chunk: int
    buffers: Dict[str, Buffer]
    body: List[Node]
    fused: List[str]
    decisions: List[str]
    materialize_bytes: Dict[str, int]
    budget: Optional[int] = None

    # -- accounting -----------------------------------------------------------------
    def bytes_by_scope(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for b in self.buffers.values():
            out[b.scope] = out.get(b.scope, 0) + b.nbytes
        return out

    @property
    def workspace_bytes(self) -> int:
        """Bytes the forward allocates beyond its inputs and output."""
        s = self.bytes_by_scope()
        return s.get("program", 0) + s.get("chunk", 0)

    def calls(self) -> List[Call]:
        out: List[Call] = []

        def walk(nodes):
            for n in nodes:
                if isinstance(n, Loop):
                    walk(n.body)
                else:
                    out.append(n)
        walk(self.body)
        return out

    # -- printing -------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"composed program {self.name!r}: B = {self.batch}, S = {self.seq_len:,}, "
                 f"query chunk = {self.chunk:,}"]
        lines.append("")
        lines.append("buffers:")
        w = max(len(b.describe()) for b in self.buffers.values())
        for scope in ("input", "output", "program", "chunk"):
            for b in self.buffers.values():
                if b.scope == scope:
                    note = f"  # {b.note}" if b.note else ""
                    lines.append(f"  {scope:<8} {b.describe():<{w}}  {fmt_bytes(b.nbytes):>11}{note}")
        sc = self.bytes_by_scope()
        lines.append(f"  workspace beyond inputs+output: {fmt_bytes(self.workspace_bytes)} "
                     f"(program {fmt_bytes(sc.get('program', 0))}, per-chunk {fmt_bytes(sc.get('chunk', 0))})"
                     + (f"; budget {fmt_bytes(self.budget)}" if self.budget else ""))
        lines.append("")
        lines.append("loop nest:")

        def emit(nodes, depth):
            pad = "  " * (depth + 1)
            for n in nodes:
                if isinstance(n, Loop):
                    note = f"  # {n.note}" if n.note else ""
                    lines.append(f"{pad}for {n.var} in range({n.start}, {n.stop}, {n.step}):{note}")
                    emit(n.body, depth + 1)
                else:
                    note = f"  # {n.note}" if n.note else ""
                    lines.append(f"{pad}{n.stage}: {', '.join(n.writes)} = {n.kernel}({', '.join(n.reads)}){note}")
        emit(self.body, 0)
        lines.append("")
        lines.append("fused stage boundaries:")
        for f in self.fused:
            lines.append(f"  - {f}")
        lines.append("")
        lines.append("decisions:")
        for d in self.decisions:
            lines.append(f"  - {d}")
        lines.append("")
        lines.append("a materialising schedule would need (beyond inputs):")
        for k, v in self.materialize_bytes.items():
            lines.append(f"  {k:<40} {fmt_bytes(v):>11}")
        lines.append(f"  {'this program (all workspace)':<40} {fmt_bytes(self.workspace_bytes):>11}")
        return "\n".join(lines)
