"""compile(spec) -> CompiledPipeline: lowers each stage to its kernel and composes them."""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch

from .inputs import validate_inputs
from .schedule import Schedule
from .spec import Pipeline, SpecError


def _cuda_ok() -> bool:
    return torch.cuda.is_available()


class CompiledPipeline:
    """A pipeline bound to a device, a path and a schedule. Call it with the canonical inputs.

    fwd(**inputs) -> out [B,S,H,Dv] bf16
    fwd(**inputs, return_indices=True) -> (out, indices [B,S,W+K] int32)
    fwd.plan(seq_len, batch) -> the composed program (pipeline IR) the planner picks
    """

    def __init__(self, spec: Pipeline, device: str, schedule: Schedule, backend: str):
        self.spec, self.device, self.schedule, self.backend_name = spec, device, schedule, backend
        self.path = schedule.path if schedule.path != "auto" else ("composed" if device == "cuda" else "reference")
        self._backend = None
        self.last_runtime = None

    def __repr__(self) -> str:
        return (f"CompiledPipeline({self.spec.name!r}, device={self.device!r}, path={self.path!r}, "
                f"backend={self.backend_name!r})")

    # -- planning -------------------------------------------------------------------
    def budget(self, batch: int, seq_len: int) -> int:
        from pipeline.planner import default_budget, output_bytes
        if self.schedule.memory_budget is not None:
            return self.schedule.memory_budget
        return default_budget(self.device, self.schedule.budget_fraction,
                              reserve=output_bytes(self.spec, batch, seq_len))

    def plan(self, seq_len: int, batch: int = 1, budget: Optional[int] = None):
        from pipeline.composer import compose
        from pipeline.planner import choose_chunk
        budget = self.budget(batch, seq_len) if budget is None else budget
        chunk = choose_chunk(self.spec, batch, seq_len, budget, self.schedule.query_chunk)
        return compose(self.spec, batch, seq_len, chunk, self.backend_name, budget)

    # -- running --------------------------------------------------------------------
    def __call__(self, return_indices: bool = False, progress: bool = False, profile: bool = False,
                 **inputs: torch.Tensor):
        B, S = validate_inputs(self.spec, inputs, device=self.device)
        if self.path == "reference":
            from pipeline import reference
            return reference.forward(self.spec, inputs, chunk=self.schedule.reference_chunk,
                                     return_indices=return_indices)
        if self.path == "materialize":
            from pipeline import materialize
            att = None
            if self.backend_name == "cuda":
                from kernels_tilelang import sparse_mla
                att = lambda q, kv, keys, scale, dv, sink: sparse_mla.sparse_mla_fwd(q, kv, keys, scale, dv, sink=sink)
            return materialize.forward(self.spec, inputs, return_indices=return_indices, attention=att)
        from pipeline.runtime import Runtime
        program = self.plan(S, B)
        rt = Runtime(self.spec, program, self._get_backend(), self.device, profile=profile)
        self.last_runtime = rt
        return rt.run(inputs, return_indices=return_indices, progress=progress)

    def _get_backend(self):
        if self._backend is None:
            from pipeline.backends import make_backend
            self._backend = make_backend(self.backend_name)
        return self._backend


def compile(spec: Pipeline, device: str = "cuda", schedule: Optional[Schedule] = None,
            backend: Optional[str] = None) -> CompiledPipeline:
    """Bind a pipeline spec to a device and an execution path.

    device 'cuda': the composed path (Triton indexer + top-k + compressor, TileLang
    attention) by default. device 'cpu': the exact reference path by default; the
    composed program also runs on the CPU (backend 'torch', or 'interpret' for the
    Triton kernels under TRITON_INTERPRET=1), which is how CI tests the composer.
    """
    if not isinstance(spec, Pipeline):
        raise SpecError(f"compile() takes a csa_dsl.Pipeline (e.g. csa_dsl.preset('v4-flash')), "
                        f"got {type(spec).__name__}")
    schedule = schedule or Schedule()
    if not isinstance(schedule, Schedule):
        raise SpecError(f"schedule must be a csa_dsl.Schedule, got {type(schedule).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cuda", "cpu"):
        raise SpecError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if dev.type == "cuda" and not _cuda_ok():
        raise SpecError("device='cuda' but no CUDA GPU is visible to torch; use compile(spec, device='cpu') "
                        "for the reference path")
    if backend is None:
        if dev.type == "cuda":
            backend = "cuda"
        else:
            backend = "interpret" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "torch"
    from pipeline.backends import BACKENDS
    if backend not in BACKENDS:
        raise SpecError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and dev.type != "cuda":
        raise SpecError("backend='cuda' needs device='cuda'")
    return CompiledPipeline(spec, str(dev), schedule, backend)


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 backend: str = "auto") -> torch.Tensor:
    """Top-k compressed row ids per query: int32 [B, S, min(topk, T)], -1 padded, ties to the smaller id.

    idx_q [B,S,HI,DI] bf16, idx_w [B,S,HI] fp32, idx_k [B,T,DI] bf16 (T = S // ratio).
    backend 'auto': the Triton kernels on CUDA tensors, the reference on CPU tensors;
    'triton' forces the kernels (on CPU only under TRITON_INTERPRET=1); 'reference'.
    """
    if backend not in ("auto", "triton", "reference"):
        raise SpecError(f"backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "reference" or (backend == "auto" and idx_q.device.type != "cuda"):
        from kernels_triton.indexer import check_indexer_shapes
        from pipeline.reference import indexer_topk as ref_topk
        check_indexer_shapes(idx_q, idx_w, idx_k, topk, ratio, allow_fp32=True, require_cuda=False)
        return ref_topk(idx_q, idx_w, idx_k, topk, ratio)
    from kernels_triton.indexer import indexer_topk as tri_topk
    return tri_topk(idx_q, idx_w, idx_k, topk, ratio)
