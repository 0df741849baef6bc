"""Side streams of a Program: which calls of other streams a call must wait for.

A Program's calls are one sequential program; a call marked with a stream (Call.stream) is issued
on a side stream of its own so that it may run while the caller's stream runs the calls after it.
The sequential order must still hold wherever two calls on different streams share bytes: a read
after a write, a write after a read, a write after a write. `Ordering` answers that from the byte
ranges of the evaluated refs (device addresses [lo, hi) of the views, per buffer): for a new call,
the latest recorded call of every other stream it must follow. It knows nothing of CUDA; `Issuer`
runs calls on CUDA streams with it, an event recorded after every tracked call. Only buffers that
calls of two streams reference are tracked (`shared_buffers`): nothing else can race.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Set, Tuple

import torch

from .program import Call, Program

Span = Tuple[str, int, int]          # (buffer, lo, hi): the device bytes [lo, hi) a view covers


def shared_buffers(program: Program) -> Set[str]:
    """Buffers that calls on two or more streams reference."""
    seen: Dict[str, Set[str]] = {}
    for c in program.calls():
        for _, ref in c.refs():
            seen.setdefault(ref.buffer, set()).add(c.stream)
    return {b for b, streams in seen.items() if len(streams) > 1}


def span(buffer: str, t: torch.Tensor) -> Span:
    """The bytes a (possibly strided) view covers, from its first to one past its last element."""
    if t.numel() == 0:
        return buffer, t.data_ptr(), t.data_ptr()
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return buffer, t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _overlap(a: Span, b: Span) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def _covers(outer: Span, inner: Span) -> bool:
    return outer[0] == inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2]


class Ordering:
    """Recorded accesses per buffer and the waits a new access needs. Calls of one stream are numbered
    0, 1, ... in issue order; waiting for call n of a stream is waiting for everything before it too."""

    def __init__(self):
        self._count: Dict[str, int] = {}
        self._writes: Dict[str, List[Tuple[Span, str, int]]] = {}
        self._reads: Dict[str, List[Tuple[Span, str, int]]] = {}

    def waits(self, stream: str, reads: Iterable[Span], writes: Iterable[Span]) -> Dict[str, int]:
        """stream -> the latest of its calls that a call on `stream` reading `reads` and writing `writes`
        must follow (read after write, write after read, write after write; same-stream order holds anyway)."""
        reads, writes = list(reads), list(writes)
        need: Dict[str, int] = {}

        def follow(entries, spans):
            for s in spans:
                for sp, st, n in entries.get(s[0], ()):
                    if st != stream and _overlap(sp, s) and n > need.get(st, -1):
                        need[st] = n
        follow(self._writes, reads + writes)
        follow(self._reads, writes)
        return need

    def record(self, stream: str, reads: Iterable[Span], writes: Iterable[Span]) -> int:
        """Record a call issued on `stream` after waiting as `waits` said; returns its number. Entries
        the call supersedes are dropped: what a write covers (a later call that must follow them must
        follow this write, which followed them), and this stream's earlier reads of the same bytes."""
        reads, writes = list(reads), list(writes)
        n = self._count.get(stream, 0)
        self._count[stream] = n + 1
        for w in writes:
            for table in (self._writes, self._reads):
                if w[0] in table:
                    table[w[0]] = [e for e in table[w[0]] if not _covers(w, e[0])]
        for r in reads:
            if r[0] in self._reads:
                self._reads[r[0]] = [e for e in self._reads[r[0]] if not (e[1] == stream and _covers(r, e[0]))]
        for table, spans in ((self._writes, writes), (self._reads, reads)):
            for s in spans:
                table.setdefault(s[0], []).append((s, stream, n))
        return n


class Issuer:
    """Issues a CUDA program's calls on their streams: the caller's stream for '' and one side stream
    per name, forked from the caller's stream at the start and joined back into it by `join`, so the
    forward as a whole stays ordered on the caller's stream (and CUDA-graph capturable)."""

    def __init__(self, program: Program, device: torch.device):
        self.main = torch.cuda.current_stream(device)
        self.side = {name: torch.cuda.Stream(device) for name in program.streams}
        for s in self.side.values():
            s.wait_stream(self.main)
        self.tracked = shared_buffers(program)
        self.order = Ordering()
        self.events: Dict[Tuple[str, int], torch.cuda.Event] = {}

    def run(self, call: Call, fn, kwargs: dict) -> None:
        reads: List[Span] = []
        writes: List[Span] = []
        for k, ref in call.refs():
            if ref.buffer in self.tracked:
                sp = span(ref.buffer, kwargs[k])
                if k in call.writes:
                    writes.append(sp)
                if k not in call.writes or k in call.updates:
                    reads.append(sp)
        stream = self.side.get(call.stream, self.main)
        for other, n in self.order.waits(call.stream, reads, writes).items():
            stream.wait_event(self.events[(other, n)])
        with torch.cuda.stream(stream):
            fn(**kwargs)
        if reads or writes:
            n = self.order.record(call.stream, reads, writes)
            ev = torch.cuda.Event()
            ev.record(stream)
            self.events[(call.stream, n)] = ev

    def join(self) -> None:
        for s in self.side.values():
            self.main.wait_stream(s)
