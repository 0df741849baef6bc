"""The interpreter: runs any Program on any backend.

It allocates exactly the program's buffers (so the memory the plan printed is the memory the
forward uses), binds the inputs, walks the loops, and runs each call by looking its op and
implementation up in one table (pipeline.stages.OPS) with the call's own arguments. Nothing
about the loop shape is known here: it is all in the Program.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch

from .lang.errors import InputError, SpecError
from .program import Call, Expr, Loop, Program, Ref, dtype_name
from .stages import OPS, Op
from .streams import Issuer


@dataclass
class Context:
    """What a call may need beyond its arguments (ops that declare a `ctx` parameter get it): the
    device, a process group for collectives, and accumulated communication figures."""

    device: torch.device
    group: Any = None
    comm_seconds: float = 0.0
    comm_bytes: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


def check(program: Program, ops: Dict[str, Op] = OPS) -> None:
    """Refuse a program the interpreter cannot run, before any allocation: unknown ops or backends,
    references to undeclared buffers, arguments the implementation does not take."""
    for call in program.calls():
        op = ops.get(call.op)
        if op is None:
            raise SpecError(f"program {program.name!r}: unknown op {call.op!r}; known ops: {sorted(ops)}")
        if call.impl not in op.impls:
            raise SpecError(f"program {program.name!r}: op {call.op!r} has no {call.impl!r} implementation; "
                            f"it has {sorted(op.impls)}")
        params = op.params(call.impl)
        unknown = sorted(set(call.args) - set(params))
        if unknown:
            raise SpecError(f"program {program.name!r}: {call.op}@{call.impl} takes no argument(s) {unknown}; "
                            f"it takes {list(params)}")
        for k, ref in call.refs():
            if ref.buffer not in program.buffers:
                raise SpecError(f"program {program.name!r}: {call.op} argument {k}={ref} names no buffer; "
                                f"buffers: {sorted(program.buffers)}")
    for name in program.outputs:
        if name not in program.buffers or program.buffers[name].scope != "output":
            raise SpecError(f"program {program.name!r}: output {name!r} is not an output buffer")


def bind_inputs(program: Program, inputs: Dict[str, torch.Tensor], device: torch.device) -> None:
    """The inputs must be exactly the program's input buffers: names, shapes, dtypes, device."""
    want = [n for n, b in program.buffers.items() if b.scope == "input"]
    missing, extra = sorted(set(want) - set(inputs)), sorted(set(inputs) - set(want))
    if missing or extra:
        raise InputError(f"program {program.name!r} reads inputs {sorted(want)}; "
                         + (f"missing {missing}" if missing else "") + (", " if missing and extra else "")
                         + (f"unexpected {extra}" if extra else ""))
    for n in want:
        b, t = program.buffers[n], inputs[n]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != b.shape or t.dtype != b.dtype:
            got = f"{tuple(t.shape)} {dtype_name(t.dtype)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"input {n!r} is {got}; program {program.name!r} was planned for {b.describe()}")
        if t.device.type != device.type:
            raise InputError(f"input {n!r} is on {t.device}; the program runs on {device}")


def execute(program: Program, inputs: Dict[str, torch.Tensor], device, *, ops: Dict[str, Op] = OPS,
            progress: Optional[Callable[[int], Any]] = None, profile: Optional[Dict[str, float]] = None,
            ctx: Optional[Context] = None, out: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Run `program` on `inputs`; return its output buffers by name.

    progress: a bar factory `progress(total) -> bar` (tqdm-like: update(n), close()) for the loop
    marked `progress`; profile: a dict that receives milliseconds per op (a sync after every
    call on CUDA: the sum exceeds the unprofiled time; calls then all run on the caller's stream);
    ctx: for ops that take one (collectives); out: caller-owned output tensors (by name) to write
    instead of allocating them. On CUDA, calls marked with a stream run on side streams
    (pipeline/streams.py); elsewhere every call runs in program order."""
    device = torch.device(device)
    check(program, ops)
    bind_inputs(program, inputs, device)
    env: Dict[str, Any] = dict(program.consts)
    env.update(inputs)
    for name, b in program.buffers.items():
        if b.scope == "input":
            continue
        given = (out or {}).get(name)
        if given is not None:
            if (tuple(given.shape) != b.shape or given.dtype != b.dtype or given.device.type != device.type
                    or not given.is_contiguous()):
                raise InputError(f"out[{name!r}] must be a contiguous {b.describe()} on {device}, got "
                                 f"{tuple(given.shape)} {dtype_name(given.dtype)} on {given.device}"
                                 + ("" if given.is_contiguous() else " (not contiguous)"))
            env[name] = given
        else:
            env[name] = torch.empty(b.shape, dtype=b.dtype, device=device)
    ctx = ctx or Context(device)
    fns = {}
    for call in program.calls():
        impl = ops[call.op].impls[call.impl]
        fns[(call.op, call.impl)] = (impl.fn, "ctx" in ops[call.op].params(call.impl))
    bar = progress(_progress_total(program.body, env)) if progress is not None else None
    issuer = Issuer(program, device) if program.streams and device.type == "cuda" and profile is None else None
    try:
        _walk(program.body, env, fns, ctx, bar, profile, device, issuer)
    finally:
        if issuer is not None:
            issuer.join()
        if bar is not None:
            bar.close()
    return {name: env[name] for name in program.outputs}


def _progress_total(nodes, env: dict) -> int:
    """Iterations of the loops marked `progress` (a dry walk of the loops alone)."""
    total = 0
    for n in nodes:
        if isinstance(n, Loop):
            for v in range(n.start.eval(env), n.stop.eval(env), n.step.eval(env)):
                inner = dict(env)
                inner[n.var] = v
                for k, e in n.bind.items():
                    inner[k] = e.eval(inner)
                total += int(n.progress) + _progress_total(n.body, inner)
    return total


def _walk(nodes, env, fns, ctx, bar, profile, device, issuer: Optional[Issuer]) -> None:
    for n in nodes:
        if isinstance(n, Loop):
            lo, hi, st = n.start.eval(env), n.stop.eval(env), n.step.eval(env)
            for v in range(lo, hi, st):
                env[n.var] = v
                for k, e in n.bind.items():
                    env[k] = e.eval(env)
                _walk(n.body, env, fns, ctx, bar, profile, device, issuer)
                if n.progress and bar is not None:
                    bar.update(1)
            continue
        fn, wants_ctx = fns[(n.op, n.impl)]
        kwargs = {k: _value(v, env) for k, v in n.args.items()}
        if wants_ctx:
            kwargs["ctx"] = ctx
        if issuer is not None:
            issuer.run(n, fn, kwargs)
        elif profile is None:
            fn(**kwargs)
        else:
            _timed(n, fn, kwargs, profile, device)


def _value(v, env):
    if isinstance(v, (Ref, Expr)):
        return v.eval(env)
    return v


def _timed(call: Call, fn, kwargs, profile: Dict[str, float], device: torch.device) -> None:
    if device.type == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn(**kwargs)
        e1.record()
        e1.synchronize()
        ms = e0.elapsed_time(e1)
    else:
        t = time.perf_counter()
        fn(**kwargs)
        ms = (time.perf_counter() - t) * 1e3
    profile[call.op] = profile.get(call.op, 0.0) + ms
