"""What a stage kind is to the compiler: one `StageKind` entry per kind, in pipeline/stages/.

An entry names its spec type, the inputs it reads (names, shapes, dtypes; per token or per
layer), its ops with one implementation per backend (the kernel folder's naive.py on
`torch`, its kernels on `interpret` and `cuda`), each implementation's transient memory, the
kernel limits checked before any launch, and the IR it can print. The composer builds calls
through `Op.call`, the interpreter finds every call's function in `OPS`, the planner reads
the bytes the calls and buffers declare, and `csa-dsl ir` lists and emits the entries' IR.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch

from ..program import Arg, Call

BACKENDS = ("cuda", "interpret", "torch")


def sized(cost: Callable[..., int], *names: str) -> Callable[..., int]:
    """A transient-bytes function of a call's sizes: cost(sizes[names[0]], sizes[names[1]], ...)."""
    return lambda **sizes: int(cost(*(sizes[n] for n in names)))


@dataclass(frozen=True)
class Impl:
    """One backend's implementation of an op: the function, the kernel it launches (as printed), and
    the bytes one call allocates for itself (a function of the call's sizes)."""

    fn: Callable
    kernel: str
    temp: Callable[..., int] = lambda **sizes: 0


@dataclass(frozen=True)
class Op:
    """An op of a stage kind. `writes`: the argument names it writes (the rest it reads); `updates`:
    those of them it also reads (in-place ops)."""

    name: str
    doc: str
    writes: Tuple[str, ...]
    impls: Dict[str, Impl]
    updates: Tuple[str, ...] = ()     # written arguments read first (in place)

    def call(self, impl: str, args: Dict[str, Arg], sizes: Optional[dict] = None, note: str = "",
             stream: str = "") -> Call:
        """A Call of this op on backend `impl` (issued on `stream`, '' the caller's), its transient bytes
        from the implementation's cost model."""
        if impl not in self.impls:
            raise KeyError(f"op {self.name!r} has no {impl!r} implementation; it has {sorted(self.impls)}")
        return Call(self.name, impl, dict(args), self.writes, note, int(self.impls[impl].temp(**(sizes or {}))),
                    self.updates, stream)

    def params(self, impl: str) -> Tuple[str, ...]:
        return tuple(inspect.signature(self.impls[impl].fn).parameters)


@dataclass(frozen=True)
class InputDef:
    """An input tensor a stage reads: `shape(B, S)`; `per_token`: sharded along the sequence (its
    axis 1), else a per-layer parameter every rank / sequence shares."""

    shape: Callable[[int, int], Tuple[int, ...]]
    dtype: torch.dtype
    per_token: bool
    doc: str = ""


@dataclass(frozen=True)
class IRSection:
    """A `csa-dsl ir --stage NAME` section: the backend it lowers to, its levels and the emitter
    `emit(pipeline_spec, level, arch) -> {part: text}` (part '' when the stage has one kernel)."""

    name: str
    backend: str
    doc: str
    levels: Tuple[str, ...]
    emit: Callable[..., Dict[str, str]]


@dataclass(frozen=True)
class StageKind:
    kind: str
    spec_type: type
    doc: str
    ops: Dict[str, Op]
    # (pipeline spec, stage spec, role) -> {input name: InputDef}
    inputs: Callable[..., Dict[str, InputDef]]
    # (pipeline spec, stage spec, backend) -> why the backend's kernels cannot run it, or None
    limits: Callable[..., Optional[str]] = lambda pipe, stage, backend: None
    ir: Tuple[IRSection, ...] = field(default_factory=tuple)
