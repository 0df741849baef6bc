"""compile(spec) -> CompiledPipeline: a spec bound to a device, a backend and a schedule.

fwd.plan(S) returns the Program the planner picks (print it, edit it), fwd.execute(program,
**inputs) runs exactly that program, and fwd(**inputs) does both. Every path (composed,
reference, materialize) is a schedule of the same stages run by the same interpreter.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from kernels_triton._env import interpreting
from kernels_triton.indexer import cost as indexer_cost
from kernels_triton.indexer.kernel import check_indexer_shapes
from pipeline import interpreter, planner
from pipeline.composer import compose_indexer
from pipeline.inputs import check_finite, validate_inputs
from pipeline.lang import defaults
from pipeline.lang.errors import SpecError
from pipeline.lang.schedule import Schedule
from pipeline.lang.spec import Pipeline, Quant
from pipeline.program import Program
from pipeline.stages import BACKENDS, unsupported


def _progress_bar(desc: str):
    """A tqdm bar factory for the interpreter, or None when tqdm is missing (progress is a nicety)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return lambda total: tqdm(total=total, desc=desc, unit="chunk", leave=False)


class CompiledPipeline:
    """A pipeline bound to a device, a path and a schedule. Call it with the canonical inputs.

    fwd(**inputs) -> out [B,S,H,Dv] bf16
    fwd(**inputs, return_indices=True) -> (out, indices [B,S,W+K] int32)
    fwd.plan(seq_len, batch) -> the Program the planner picks; fwd.execute(program, **inputs) runs it
    fwd.last_profile -> milliseconds per op of the last call made with profile=True (numbers only:
    a compiled pipeline keeps no tensor between calls)
    """

    def __init__(self, spec: Pipeline, device: str, schedule: Schedule, backend: str):
        self.spec, self.device, self.schedule, self.backend_name = spec, device, schedule, backend
        self.path = schedule.path if schedule.path != "auto" else ("composed" if device.startswith("cuda")
                                                                     else "reference")
        self.last_profile: Optional[Dict[str, float]] = None

    def __repr__(self) -> str:
        return (f"CompiledPipeline({self.spec.name!r}, device={self.device!r}, path={self.path!r}, "
                f"backend={self.backend_name!r})")

    # -- planning -------------------------------------------------------------------
    def plan(self, seq_len: int, batch: int = 1, return_indices: bool = False,
             budget: Optional[int] = None) -> Program:
        """The Program this pipeline runs at (batch, seq_len), planned for `budget` (default: the
        schedule's, else a fraction of the memory available now, after the outputs)."""
        mem = planner.memory(self.device)
        if budget is None:
            budget = self.schedule.memory_budget
        if budget is None:
            reserve = planner.output_bytes(self.spec, batch, seq_len, return_indices)
            budget = planner.default_budget(mem, self.schedule.budget_fraction, reserve)
        return planner.plan(self.spec, batch, seq_len, self.backend_name, budget, path=self.path,
                            query_chunk=self.schedule.query_chunk, return_indices=return_indices, mem=mem)

    # -- running --------------------------------------------------------------------
    def execute(self, program: Program, progress: bool = False, profile: bool = False,
                check_inputs: Optional[bool] = None, **inputs: torch.Tensor):
        """Run exactly `program` (from plan(), possibly edited) on `inputs`; returns out, or (out, indices)
        when the program writes the key lists. check_inputs: None follows the schedule."""
        validate_inputs(self.spec, inputs, device=self.device)
        return self._run(program, inputs, progress, profile, check_inputs)

    def __call__(self, return_indices: bool = False, progress: bool = False, profile: bool = False,
                 check_inputs: Optional[bool] = None, **inputs: torch.Tensor):
        B, S = validate_inputs(self.spec, inputs, device=self.device)
        program = self.plan(S, B, return_indices)
        return self._run(program, inputs, progress, profile, check_inputs)

    def _run(self, program: Program, inputs: Dict[str, torch.Tensor], progress: bool, profile: bool,
             check_inputs: Optional[bool]):
        if self.schedule.check_inputs if check_inputs is None else check_inputs:
            check_finite(inputs)
        prof: Optional[Dict[str, float]] = {} if profile else None
        bar = _progress_bar(f"{self.spec.name} S={program.seq_len:,}") if progress else None
        res = interpreter.execute(program, inputs, self.device, progress=bar, profile=prof)
        self.last_profile = prof
        outs = tuple(res[n] for n in program.outputs)
        return outs[0] if len(outs) == 1 else outs


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


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 backend: str = "auto", chunk: Optional[int] = None, progress: bool = False,
                 quant: Optional[Quant] = None) -> torch.Tensor:
    """Top-k compressed row ids per query: int32 [B, S, min(topk, T)], -1 padded, ties to the smaller id,
    NaN scores below every number. `quant` (e.g. preset('v4-flash').indexer.quant): idx_q and idx_k go
    through that quantisation step first and the score runs on FP8 operands (docs/semantics.md section 5).

    idx_q [B,S,HI,DI] bf16, idx_w [B,S,HI] fp32, idx_k [B,T,DI] bf16 (T = S // ratio).
    backend 'auto': the Triton kernels on CUDA tensors, the PyTorch reference on CPU tensors;
    'triton' forces the kernels (on a CPU only under TRITON_INTERPRET=1); 'torch' (or 'reference')
    the reference. The same score and select calls as the full program, in a Program of their own."""
    if backend not in ("auto", "triton", "torch", "reference"):
        raise SpecError(f"backend must be 'auto', 'triton', 'torch' or 'reference', got {backend!r}")
    on_cuda = isinstance(idx_q, torch.Tensor) and idx_q.device.type == "cuda"
    if backend == "auto":
        backend = "triton" if on_cuda else "torch"
    impl = {"triton": "cuda" if on_cuda else "interpret", "torch": "torch", "reference": "torch"}[backend]
    B, S, HI, DI, T = check_indexer_shapes(idx_q, idx_w, idx_k, topk, ratio, allow_fp32=impl != "cuda",
                                           require_cuda=impl != "torch")
    chunk = min(S, chunk or indexer_cost.default_chunk(T, defaults.INDEXER_SCORE_BUFFER, defaults.INDEXER_MIN_CHUNK))
    if quant is not None and (not isinstance(quant, Quant) or DI % quant.block):
        raise SpecError(f"quant must be a Quant whose block divides the index dim {DI}, got {quant!r}")
    program = compose_indexer(HI, DI, topk, ratio, B, S, chunk, impl, dtype=idx_q.dtype, quant=quant)
    inputs = {"idx_q": idx_q, "idx_w": idx_w, "idx_k": idx_k}
    bar = _progress_bar(f"indexer S={S:,}") if progress else None
    return interpreter.execute(program, inputs, idx_q.device, progress=bar)["ids"]
