"""compile(spec) -> CompiledPipeline: a spec bound to a device, a backend and a schedule.

fwd.plan(S) returns the Program the planner picks (print it, edit it), fwd.execute(program,
**inputs) runs exactly that program, and fwd(**inputs) does both. Every path (composed,
reference, materialize) is a schedule of the same stages run by the same interpreter.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_triton._env import interpreting
from pipeline import interpreter, planner
from pipeline.composer import Packed
from pipeline.inputs import check_finite, input_signature, output_signature, unpack, validate_inputs, validate_varlen
from pipeline.lang.errors import InputError, SpecError
from pipeline.lang.schedule import Schedule
from pipeline.lang.spec import Pipeline
from pipeline.program import Program
from pipeline.stages import BACKENDS, unsupported

from . import ops
from .progress import progress_bar


class CompiledPipeline:
    """A pipeline bound to a device, a path and a schedule. Call it with the canonical inputs.

    fwd(**inputs) -> out [B,S,H,Dv] bf16
    fwd(**inputs, return_indices=True) -> (out, indices [B,S,W+K] int32)
    fwd.varlen(cu_seqlens, **packed_inputs) -> out [N,H,Dv]: a packed batch of sequences (docs/integration.md)
    fwd.plan(seq_len, batch) -> the Program the planner picks; fwd.execute(program, **inputs) runs it
    out=: a caller-owned output tensor to write (or (out, indices) with return_indices), as torch's out=
    fwd.last_profile -> milliseconds per op of the last call made with profile=True (numbers only:
    a compiled pipeline keeps no tensor between calls)
    """

    def __init__(self, spec: Pipeline, device: str, schedule: Schedule, backend: str):
        self.spec, self.device, self.schedule, self.backend_name = spec, device, schedule, backend
        self.path = schedule.path if schedule.path != "auto" else ("composed" if device.startswith("cuda")
                                                                     else "reference")
        self.last_profile: Optional[Dict[str, float]] = None
        self.input_names = list(input_signature(spec, 1, 1))
        self.handle = ops.register(self)        # the name torch ops (ops.py) know this pipeline by

    def __repr__(self) -> str:
        return (f"CompiledPipeline({self.spec.name!r}, device={self.device!r}, path={self.path!r}, "
                f"backend={self.backend_name!r})")

    # -- planning -------------------------------------------------------------------
    def plan(self, seq_len: int, batch: int = 1, return_indices: bool = False,
             budget: Optional[int] = None, packed: Optional[Packed] = None) -> Program:
        """The Program this pipeline runs at (batch, seq_len), planned for `budget` (default: the
        schedule's, else a fraction of the memory available now, after the outputs). `packed`
        (Packed(sequences, max_seqlen)): seq_len packed tokens of that many sequences, batch 1."""
        mem = planner.memory(self.device)
        if budget is None:
            budget = self.schedule.memory_budget
        if budget is None:
            reserve = planner.output_bytes(self.spec, batch, seq_len, return_indices,
                                           packed.max_seqlen if packed else None)
            budget = planner.default_budget(mem, self.schedule.budget_fraction, reserve)
        return planner.plan(self.spec, batch, seq_len, self.backend_name, budget, path=self.path,
                            query_chunk=self.schedule.query_chunk, return_indices=return_indices, mem=mem,
                            packed=packed, overlap=self.schedule.overlap)

    # -- running --------------------------------------------------------------------
    def execute(self, program: Program, progress: bool = False, profile: bool = False,
                check_inputs: Optional[bool] = None, **inputs: torch.Tensor):
        """Run exactly `program` (from plan(), possibly edited) on `inputs`; returns out, or (out, indices)
        when the program writes the key lists. check_inputs: None follows the schedule. A packed program
        (plan(..., packed=Packed(n, max_seqlen))) takes cu_seqlens= and the packed inputs, as varlen."""
        if "cu_seqlens" in program.buffers:
            cu = inputs.pop("cu_seqlens", None)
            return self.forward_varlen(cu, inputs, program.consts["max_seqlen"], "indices" in program.outputs,
                                       progress, profile, check_inputs, program=program)
        validate_inputs(self.spec, inputs, device=self.device)
        return self._run(program, inputs, progress, profile, check_inputs)

    def __call__(self, return_indices: bool = False, progress: bool = False, profile: bool = False,
                 check_inputs: Optional[bool] = None, out=None, **inputs: torch.Tensor):
        if ops.traced(inputs.get("q")):     # torch.compile / fake tensors: the custom op (ops.py)
            _untraceable(progress, profile)
            return ops.call_forward(self, inputs, return_indices, check_inputs, out)
        return self.forward(inputs, return_indices, progress, profile, check_inputs, out)

    def forward(self, inputs: Dict[str, torch.Tensor], return_indices: bool = False, progress: bool = False,
                profile: bool = False, check_inputs: Optional[bool] = None, out=None):
        """fwd(**inputs) with the inputs as one dict: the eager code every call runs."""
        B, S = validate_inputs(self.spec, inputs, device=self.device)
        program = self.plan(S, B, return_indices)
        return self._run(program, inputs, progress, profile, check_inputs, out)

    def varlen(self, cu_seqlens: torch.Tensor, max_seqlen: Optional[int] = None, return_indices: bool = False,
               progress: bool = False, profile: bool = False, check_inputs: Optional[bool] = None, out=None,
               **inputs: torch.Tensor):
        """A packed batch (docs/semantics.md section 8): sequence i is tokens [cu_seqlens[i], cu_seqlens[i+1])
        of the per-token inputs, packed with no batch axis (q [N,H,D], kv [N,D], idx_q [N,HI,DI], ...;
        per-layer parameters as usual). -> out [N,H,Dv] (and, with return_indices, the key lists [N,W+K]
        numbered as a B = 1 run of each sequence numbers them, K that of the longest). Each sequence's
        rows equal its own B = 1 run.

        cu_seqlens: int32 [n + 1] on the inputs' device. max_seqlen: the longest sequence (sizes the
        list width and the RoPE tables). Without it the values of cu_seqlens are read back once (a host
        sync) and checked; with it nothing is read back unless check_inputs is True (the way to call it
        inside a CUDA graph: the caller vouches for cu_seqlens). out=: caller-owned output(s) [N,H,Dv]."""
        if ops.traced(inputs.get("q")):
            _untraceable(progress, profile)
            return ops.call_varlen(self, cu_seqlens, inputs, max_seqlen, return_indices, check_inputs, out)
        return self.forward_varlen(cu_seqlens, inputs, max_seqlen, return_indices, progress, profile, check_inputs,
                                   out)

    def forward_varlen(self, cu_seqlens: torch.Tensor, inputs: Dict[str, torch.Tensor],
                       max_seqlen: Optional[int] = None, return_indices: bool = False, progress: bool = False,
                       profile: bool = False, check_inputs: Optional[bool] = None, out=None,
                       program: Optional[Program] = None):
        """fwd.varlen with the inputs as one dict: the eager code (`program`: one planned for this packed
        batch, else planned here). The outputs are allocated here, [N, ...], and the B = 1 program writes
        views of them."""
        N, n, longest = validate_varlen(self.spec, cu_seqlens, inputs, device=self.device, max_seqlen=max_seqlen,
                                        check_values=max_seqlen is None or bool(check_inputs))
        if program is None:
            program = self.plan(N, 1, return_indices, packed=Packed(n, longest))
        elif (program.seq_len, program.consts.get("n_seqs")) != (N, n):
            raise InputError(f"program {program.name!r} was planned for {program.consts.get('n_seqs')} sequences in "
                             f"{program.seq_len:,} tokens; the inputs are {n} in {N:,}")
        b1 = unpack(self.spec, inputs)
        b1["cu_seqlens"] = cu_seqlens
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out or (None,) * (1 + return_indices))
        sig = output_signature(self.spec, 1, N, return_indices, longest)
        outs = tuple(torch.empty(shape, dtype=dt, device=self.device) if o is None else o
                     for o, (shape, dt) in zip(outs, sig.values())) + outs[len(sig):]
        self._run(program, b1, progress, profile, check_inputs, tuple(o.unsqueeze(0) for o in outs))
        return outs if return_indices else outs[0]

    def _run(self, program: Program, inputs: Dict[str, torch.Tensor], progress: bool, profile: bool,
             check_inputs: Optional[bool], out=None):
        if self.schedule.check_inputs if check_inputs is None else check_inputs:
            check_finite(inputs)
        given = _caller_outputs(program, out)
        prof: Optional[Dict[str, float]] = {} if profile else None
        bar = progress_bar(f"{self.spec.name} S={program.seq_len:,}") if progress else None
        res = interpreter.execute(program, inputs, self.device, progress=bar, profile=prof, out=given)
        self.last_profile = prof
        outs = tuple(res[n] for n in program.outputs)
        return outs[0] if len(outs) == 1 else outs


def _untraceable(progress: bool, profile: bool) -> None:
    if progress or profile:
        raise InputError("progress= and profile= need an eager call; under torch.compile or on fake tensors the "
                         "forward is one opaque op (call it eagerly to profile it)")


def _caller_outputs(program: Program, out) -> Optional[Dict[str, torch.Tensor]]:
    """out= (a tensor, or a tuple in the order of the program's outputs, None entries allocated) -> by name."""
    if out is None:
        return None
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    if len(outs) != len(program.outputs) or not all(o is None or isinstance(o, torch.Tensor) for o in outs):
        raise InputError(f"out= must be {len(program.outputs)} tensor(s) ({', '.join(program.outputs)}), got "
                         f"{len(outs)} value(s)")
    return {name: o for name, o in zip(program.outputs, outs) if o is not None}


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cuda", "cpu"):
        raise SpecError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("device='cuda' but no CUDA GPU is visible to torch; use compile(spec, device='cpu') "
                        "for the reference path")
    return dev


def compile(spec: Pipeline, device: str = "cuda", schedule: Optional[Schedule] = None,
            backend: Optional[str] = None) -> CompiledPipeline:
    """Bind a pipeline spec to a device and an execution path.

    device 'cuda': the composed path (Triton indexer + top-k + compressor, TileLang attention) by
    default. device 'cpu': the exact reference path by default; the composed program also runs on
    the CPU (backend 'torch', or 'interpret' for the Triton kernels under TRITON_INTERPRET=1).
    Sizes the chosen kernels cannot run are refused here, before any work, with the limit and the fix.
    """
    if not isinstance(spec, Pipeline):
        raise SpecError(f"compile() takes a csa_dsl.Pipeline (e.g. csa_dsl.preset('v4-flash')), "
                        f"got {type(spec).__name__}")
    schedule = schedule or Schedule()
    if not isinstance(schedule, Schedule):
        raise SpecError(f"schedule must be a csa_dsl.Schedule, got {type(schedule).__name__}")
    dev = _device(device)
    if backend is None:
        backend = "cuda" if dev.type == "cuda" else ("interpret" if interpreting() else "torch")
    if backend not in BACKENDS:
        raise SpecError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and dev.type != "cuda":
        raise SpecError("backend='cuda' needs device='cuda'")
    fwd = CompiledPipeline(spec, str(dev), schedule, backend)
    if fwd.path != "reference":
        why = unsupported(spec, backend)
        if why is not None:
            raise SpecError(f"pipeline {spec.name!r} cannot run on the {backend} backend: {why}")
    return fwd
