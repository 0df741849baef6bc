"""torch.library custom ops: what torch.compile, fake-tensor tracing and CUDA graphs see of csa-dsl.

    csa_dsl::forward(str pipeline, Tensor[] inputs, bool return_indices, bool? check_inputs) -> Tensor[]
    csa_dsl::forward_out(str pipeline, Tensor[] inputs, Tensor(a!)[] outs, bool? check_inputs) -> ()
    csa_dsl::forward_varlen(str pipeline, Tensor cu_seqlens, Tensor[] inputs, SymInt? max_seqlen,
                            bool return_indices, bool? check_inputs) -> Tensor[]
    csa_dsl::forward_varlen_out(..., Tensor(a!)[] outs, ...) -> ()
    csa_dsl::indexer_topk(Tensor idx_q, Tensor idx_w, Tensor idx_k, int topk, int ratio, ..., str score_rounding,
                          bool fp8_mma) -> Tensor
    csa_dsl::sparse_attention(Tensor q, Tensor kv, Tensor indices, Tensor? sink, float scale, int v_dim) -> Tensor

A compiled pipeline is named by a string handle (torch ops take no Python objects): `register` files it
in a registry that holds it weakly, and the ops look it up. Its inputs travel as one list in
input_signature order. Each op has one implementation for CPU and CUDA tensors (the eager code: the
Program on the pipeline's backend) and a fake one that checks the layout and returns the output shapes
from the spec alone, so Dynamo and FakeTensorMode never run, or trace into, the pipeline's Python.

Eager calls do not go through the dispatcher (nothing is in the way of the kernels); `traced()` says when
a call must: while torch.compile traces, or on fake tensors.
"""
import itertools
import weakref
from typing import Dict, List, Optional, Sequence

import torch
from torch._subclasses.fake_tensor import is_fake

from pipeline.inputs import output_signature, validate_inputs, validate_varlen
from pipeline.lang.errors import InputError
from pipeline.lang.spec import Quant
from kernels_triton.indexer.kernel import check_indexer_shapes
from kernels_tilelang.sparse_mla.kernel import validate_sparse_mla_inputs

from . import stage_functions

DEVICES = ("cpu", "cuda")
_PIPELINES: "weakref.WeakValueDictionary[str, object]" = weakref.WeakValueDictionary()
_COUNTER = itertools.count()


def register(fwd) -> str:
    """File a compiled pipeline under a fresh handle (its spec's name and a serial number) and return it."""
    handle = f"{fwd.spec.name}#{next(_COUNTER)}"
    _PIPELINES[handle] = fwd
    return handle


def lookup(handle: str):
    fwd = _PIPELINES.get(handle)
    if fwd is None:
        raise InputError(f"no compiled pipeline {handle!r} is alive; keep the object csa_dsl.compile returned "
                         f"for as long as a compiled graph calls it")
    return fwd


def traced(t) -> bool:
    """True while torch.compile traces or when `t` is a fake tensor: then a call goes through the ops."""
    return torch.compiler.is_compiling() or (isinstance(t, torch.Tensor) and is_fake(t))


# -- the padded forward ---------------------------------------------------------------------------
def _named(fwd, tensors: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    return dict(zip(fwd.input_names, tensors))


def _listed(fwd, inputs: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    missing = [n for n in fwd.input_names if n not in inputs]
    extra = [n for n in inputs if n not in fwd.input_names]
    if missing or extra:
        raise InputError(f"pipeline {fwd.spec.name!r} reads inputs {fwd.input_names}; "
                         f"missing {missing}, unexpected {extra}")
    return [inputs[n] for n in fwd.input_names]


def _empty(sig, device) -> List[torch.Tensor]:
    return [torch.empty(shape, dtype=dt, device=device) for shape, dt in sig.values()]


def _check_outs(sig, outs: Sequence[torch.Tensor]) -> None:
    want = [(tuple(shape), dt) for shape, dt in sig.values()]
    got = [(tuple(o.shape), o.dtype) for o in outs]
    if got != want:
        raise InputError(f"out= must be {', '.join(f'{s} {d}' for s, d in want)}; got "
                         f"{', '.join(f'{s} {d}' for s, d in got)}")


def _as_list(res) -> List[torch.Tensor]:
    return list(res) if isinstance(res, tuple) else [res]


@torch.library.custom_op("csa_dsl::forward", mutates_args=(), device_types=DEVICES)
def forward(pipeline: str, inputs: List[torch.Tensor], return_indices: bool,
            check_inputs: Optional[bool]) -> List[torch.Tensor]:
    fwd = lookup(pipeline)
    return _as_list(fwd.forward(_named(fwd, inputs), return_indices=return_indices, check_inputs=check_inputs))


@forward.register_fake
def _forward_fake(pipeline, inputs, return_indices, check_inputs):
    fwd = lookup(pipeline)
    B, S = validate_inputs(fwd.spec, _named(fwd, inputs), device=fwd.device)
    return _empty(output_signature(fwd.spec, B, S, return_indices), inputs[0].device)


@torch.library.custom_op("csa_dsl::forward_out", mutates_args=("outs",), device_types=DEVICES)
def forward_out(pipeline: str, inputs: List[torch.Tensor], outs: List[torch.Tensor],
                check_inputs: Optional[bool]) -> None:
    fwd = lookup(pipeline)
    fwd.forward(_named(fwd, inputs), return_indices=len(outs) == 2, check_inputs=check_inputs, out=tuple(outs))


@forward_out.register_fake
def _forward_out_fake(pipeline, inputs, outs, check_inputs):
    fwd = lookup(pipeline)
    B, S = validate_inputs(fwd.spec, _named(fwd, inputs), device=fwd.device)
    _check_outs(output_signature(fwd.spec, B, S, len(outs) == 2), outs)


def call_forward(fwd, inputs: Dict[str, torch.Tensor], return_indices: bool, check_inputs: Optional[bool], out):
    """fwd(**inputs) through the ops (what a traced call runs)."""
    tensors = _listed(fwd, inputs)
    if out is None:
        res = torch.ops.csa_dsl.forward(fwd.handle, tensors, return_indices, check_inputs)
        return tuple(res) if return_indices else res[0]
    outs = _given_outs(out, return_indices)
    torch.ops.csa_dsl.forward_out(fwd.handle, tensors, list(outs), check_inputs)
    return out


def _given_outs(out, return_indices: bool):
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    if len(outs) != 1 + return_indices or any(o is None for o in outs):
        raise InputError(f"under torch.compile out= must give every output: {1 + return_indices} tensor(s)")
    return outs


# -- the packed (varlen) forward ------------------------------------------------------------------
def _varlen_fake_layout(fwd, cu_seqlens, inputs, max_seqlen, return_indices):
    if max_seqlen is None and return_indices:
        raise InputError("fwd.varlen(..., return_indices=True) under torch.compile or on fake tensors needs "
                         "max_seqlen=: the key lists are W + topk_eff(max_seqlen) wide")
    named = _named(fwd, inputs)
    N = named["q"].shape[0]
    validate_varlen(fwd.spec, cu_seqlens, named, device=fwd.device, max_seqlen=max_seqlen or N, check_values=False)
    return output_signature(fwd.spec, 1, N, return_indices, max_seqlen or N)


@torch.library.custom_op("csa_dsl::forward_varlen", mutates_args=(), device_types=DEVICES)
def forward_varlen(pipeline: str, cu_seqlens: torch.Tensor, inputs: List[torch.Tensor], max_seqlen: Optional[int],
                   return_indices: bool, check_inputs: Optional[bool]) -> List[torch.Tensor]:
    fwd = lookup(pipeline)
    res = fwd.forward_varlen(cu_seqlens, _named(fwd, inputs), max_seqlen=max_seqlen, return_indices=return_indices,
                             check_inputs=check_inputs)
    return _as_list(res)


@forward_varlen.register_fake
def _forward_varlen_fake(pipeline, cu_seqlens, inputs, max_seqlen, return_indices, check_inputs):
    fwd = lookup(pipeline)
    return _empty(_varlen_fake_layout(fwd, cu_seqlens, inputs, max_seqlen, return_indices), inputs[0].device)


@torch.library.custom_op("csa_dsl::forward_varlen_out", mutates_args=("outs",), device_types=DEVICES)
def forward_varlen_out(pipeline: str, cu_seqlens: torch.Tensor, inputs: List[torch.Tensor], outs: List[torch.Tensor],
                       max_seqlen: Optional[int], check_inputs: Optional[bool]) -> None:
    fwd = lookup(pipeline)
    fwd.forward_varlen(cu_seqlens, _named(fwd, inputs), max_seqlen=max_seqlen, return_indices=len(outs) == 2,
                       check_inputs=check_inputs, out=tuple(outs))


@forward_varlen_out.register_fake
def _forward_varlen_out_fake(pipeline, cu_seqlens, inputs, outs, max_seqlen, check_inputs):
    fwd = lookup(pipeline)
    _check_outs(_varlen_fake_layout(fwd, cu_seqlens, inputs, max_seqlen, len(outs) == 2), outs)


def call_varlen(fwd, cu_seqlens, inputs, max_seqlen, return_indices: bool, check_inputs, out):
    """fwd.varlen(cu_seqlens, **inputs) through the ops."""
    tensors = _listed(fwd, inputs)
    if out is None:
        res = torch.ops.csa_dsl.forward_varlen(fwd.handle, cu_seqlens, tensors, max_seqlen, return_indices,
                                               check_inputs)
        return tuple(res) if return_indices else res[0]
    outs = _given_outs(out, return_indices)
    torch.ops.csa_dsl.forward_varlen_out(fwd.handle, cu_seqlens, tensors, list(outs), max_seqlen, check_inputs)
    return out


# -- single stages --------------------------------------------------------------------------------
@torch.library.custom_op("csa_dsl::indexer_topk", mutates_args=(), device_types=DEVICES)
def _indexer_topk_op(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                     backend: str, chunk: Optional[int], quant_format: Optional[str], quant_block: int,
                     score_rounding: str, fp8_mma: bool) -> torch.Tensor:
    quant = Quant(quant_format, quant_block) if quant_format is not None else None
    return stage_functions.indexer_topk(idx_q, idx_w, idx_k, topk, ratio, backend=backend, chunk=chunk, quant=quant,
                                        score_rounding=score_rounding, fp8_mma=fp8_mma)


@_indexer_topk_op.register_fake
def _indexer_topk_fake(idx_q, idx_w, idx_k, topk, ratio, backend, chunk, quant_format, quant_block, score_rounding,
                       fp8_mma):
    B, S, HI, DI, T = check_indexer_shapes(idx_q, idx_w, idx_k, topk, ratio, allow_fp32=True, require_cuda=False)
    return idx_q.new_empty((B, S, min(topk, T)), dtype=torch.int32)


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 backend: str = "auto", chunk: Optional[int] = None, progress: bool = False,
                 quant: Optional[Quant] = None, score_rounding: str = "fp32", fp8_mma: bool = False) -> torch.Tensor:
    if traced(idx_q):
        return torch.ops.csa_dsl.indexer_topk(idx_q, idx_w, idx_k, topk, ratio, backend, chunk,
                                              None if quant is None else quant.format,
                                              0 if quant is None else quant.block, score_rounding, fp8_mma)
    return stage_functions.indexer_topk(idx_q, idx_w, idx_k, topk, ratio, backend=backend, chunk=chunk,
                                        progress=progress, quant=quant, score_rounding=score_rounding, fp8_mma=fp8_mma)


indexer_topk.__doc__ = stage_functions.indexer_topk.__doc__


@torch.library.custom_op("csa_dsl::sparse_attention", mutates_args=(), device_types=DEVICES)
def _sparse_attention_op(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, sink: Optional[torch.Tensor],
                         scale: float, v_dim: int, backend: str) -> torch.Tensor:
    return stage_functions.sparse_attention(q, kv, indices, scale, v_dim, sink, backend=backend)


@_sparse_attention_op.register_fake
def _sparse_attention_fake(q, kv, indices, sink, scale, v_dim, backend):
    validate_sparse_mla_inputs(q, kv, indices, scale, v_dim, sink, need_cuda=False)
    return q.new_empty((*q.shape[:3], v_dim), dtype=torch.bfloat16)


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, scale: float, v_dim: int,
                     sink: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    if traced(q):
        return torch.ops.csa_dsl.sparse_attention(q, kv, indices, sink, float(scale), v_dim, backend)
    return stage_functions.sparse_attention(q, kv, indices, scale, v_dim, sink, backend=backend)


sparse_attention.__doc__ = stage_functions.sparse_attention.__doc__
