"""Single stages as plain functions, for callers that bring their own tensors: the indexer's top-k (a
Program of its own, the same score and select calls as the full forward) and the sparse attention
(the TileLang kernel on CUDA, its PyTorch reference on CPU). ops.py registers both as torch ops."""
from __future__ import annotations

from typing import Optional

import torch

from kernels_tilelang.sparse_mla import naive as sparse_mla_naive
from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd, validate_sparse_mla_inputs
from kernels_triton.indexer import cost as indexer_cost
from kernels_triton.indexer.kernel import check_indexer_shapes
from pipeline import interpreter
from pipeline.composer import compose_indexer
from pipeline.lang import defaults
from pipeline.lang.errors import SpecError
from pipeline.lang.spec import Quant

from .progress import progress_bar


def indexer_topk(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int, ratio: int,
                 backend: str = "auto", chunk: Optional[int] = None, progress: bool = False,
                 quant: Optional[Quant] = None, score_rounding: str = "fp32", fp8_mma: bool = False) -> torch.Tensor:
    """Top-k compressed row ids per query: int32 [B, S, min(topk, T)], -1 padded, ties to the smaller id,
    NaN scores below every number. `quant` (e.g. preset('v4-flash').indexer.quant): idx_q and idx_k go
    through that quantisation step first and the score runs on FP8 operands (docs/semantics.md section 5).
    `score_rounding` (Indexer.score_rounding): 'bf16' ranks by the official code's bf16 score. `fp8_mma`
    (Indexer.fp8_mma, with an e4m3 `quant`): the score multiplies on FP8 tensor cores, as V3.2's indexer kernels do.

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
    program = compose_indexer(HI, DI, topk, ratio, B, S, chunk, impl, dtype=idx_q.dtype, quant=quant,
                              score_rounding=score_rounding, fp8_mma=fp8_mma)
    inputs = {"idx_q": idx_q, "idx_w": idx_w, "idx_k": idx_k}
    bar = progress_bar(f"indexer S={S:,}") if progress else None
    return interpreter.execute(program, inputs, idx_q.device, progress=bar)["ids"]


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, scale: float, v_dim: int,
                     sink: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    """Sparse MLA attention over given key lists -> out [B, S, H, v_dim] bf16 (docs/semantics.md section 4).

    q [B,S,H,D] bf16, kv [B,R,D] bf16 (the rows; values are their first v_dim channels), indices
    [B,S,NI] int32 row ids (-1 and ids outside [0, R) are empty slots), sink [H] fp32 or None.
    backend 'auto': the TileLang kernel on CUDA tensors, the PyTorch reference on CPU tensors; 'torch'
    forces the reference. The inputs are checked (dtypes, shapes, contiguity) before any launch."""
    if backend not in ("auto", "torch", "reference"):
        raise SpecError(f"backend must be 'auto', 'torch' or 'reference', got {backend!r}")
    on_cuda = isinstance(q, torch.Tensor) and q.device.type == "cuda" and backend == "auto"
    validate_sparse_mla_inputs(q, kv, indices, scale, v_dim, sink, need_cuda=on_cuda)
    if on_cuda:
        return sparse_mla_fwd(q, kv, indices, float(scale), v_dim, sink)
    return sparse_mla_naive.sparse_attention(q, kv, indices, float(scale), v_dim, sink).to(torch.bfloat16)
