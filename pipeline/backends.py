"""Stage implementations the runtime dispatches to, one set per backend.

- `torch`: the reference stage functions (exact; CPU or GPU), writing into the
  planner's buffers so the composed program runs unchanged.
- `interpret`: the Triton kernels under TRITON_INTERPRET=1 (CPU tests) with the
  torch attention (TileLang has no CPU runtime).
- `cuda`: Triton indexer / top-k / compressor / RoPE and the TileLang attention.
"""
from __future__ import annotations

import torch

from csa_dsl.spec import Compressor, RoPE

from . import reference as ref

BACKENDS = ("cuda", "interpret", "torch")


class TorchBackend:
    name = "torch"

    def compress(self, values, gate, ape, norm, c: Compressor, out, row_start: int = 0, position_offset: int = 0):
        """out <- compressed rows [row_start, row_start + len(out)) of `values` (RoPE at + position_offset)."""
        full = ref.compress(values, gate, ape, norm, c, position_offset=position_offset)
        out.copy_(full[:, row_start:row_start + out.shape[1]])

    def score(self, q, w, k, s_first, ratio, scores):
        n, T = q.shape[0], k.shape[0]
        pos = torch.arange(s_first, s_first + n, device=q.device)
        sc = ref.indexer_scores(q[None], w[None], k[None])[0]
        scores[:n, :T] = ref.mask_invisible(sc, pos, ratio)

    def select(self, scores, s_first, n, ratio, k_eff, topk, out, idx_offset, window, cand, T):
        """out[:, :window] = window ids, out[:, window:] = selected rows + idx_offset (-1 padded)."""
        pos = torch.arange(s_first, s_first + n, device=scores.device)
        sel = ref.topk_select(scores[None, :n, :T], pos, ratio, topk)[0]
        out[:, window:].copy_(torch.where(sel >= 0, sel + idx_offset, sel))
        if window:
            out[:, :window].copy_(ref.window_indices(pos, window))

    def attention(self, q, kv, keys, scale, v_dim, sink, out):
        out.copy_(ref.sparse_attention(q[None], kv[None], keys[None], scale, v_dim, sink)[0].to(out.dtype))

    def rope(self, x, rope: RoPE, pos0: int):
        positions = torch.arange(pos0, pos0 + x.shape[0], device=x.device)
        x.copy_(ref.rope_rows_bf16(x, rope, positions, inverse=True, heads=True))


class InterpretBackend(TorchBackend):
    """Triton kernels in the interpreter; the caller must have set TRITON_INTERPRET=1 before import."""

    name = "interpret"

    def __init__(self):
        from kernels_triton import indexer as tri_indexer
        self._ix = tri_indexer
        try:
            from kernels_triton import compressor as tri_comp
            from kernels_triton import rope as tri_rope
        except ImportError:  # kernels not present yet: the torch versions stand in
            tri_comp = tri_rope = None
        self._comp, self._rope = tri_comp, tri_rope

    def compress(self, values, gate, ape, norm, c, out, row_start: int = 0, position_offset: int = 0):
        if self._comp is None:
            return super().compress(values, gate, ape, norm, c, out, row_start, position_offset)
        self._comp.compress(values, gate, ape, norm, c, row_start=row_start, row_end=row_start + out.shape[1],
                            out=out, position_offset=position_offset)

    def score(self, q, w, k, s_first, ratio, scores):
        # the interpreter's tl.dot is wrong on bf16 operands; bf16 -> fp32 is exact, and the kernel's
        # fp32 path (IEEE dot) then computes the reference's fp32 math
        self._ix.score_chunk(q.float(), w, k.float(), s_first, ratio, scores)

    def select(self, scores, s_first, n, ratio, k_eff, topk, out, idx_offset, window, cand, T):
        self._ix.select_chunk(scores, s_first, n, ratio, k_eff, topk, out, idx_offset=idx_offset,
                              window=window, cand=cand)

    def rope(self, x, rope, pos0: int):
        if self._rope is None:
            return super().rope(x, rope, pos0)
        self._rope.apply_rope_(x, rope, pos0, inverse=True)


class CudaBackend(InterpretBackend):
    name = "cuda"

    def score(self, q, w, k, s_first, ratio, scores):
        self._ix.score_chunk(q, w, k, s_first, ratio, scores)

    def __init__(self, attention_variant: str = "ws"):
        super().__init__()
        if self._comp is None or self._rope is None:
            raise RuntimeError("the CUDA backend needs kernels_triton.compressor and kernels_triton.rope")
        from kernels_tilelang import sparse_mla
        self._att = sparse_mla
        self.variant = attention_variant

    def attention(self, q, kv, keys, scale, v_dim, sink, out):
        self._att.sparse_mla_fwd(q[None], kv[None], keys[None], scale, v_dim, sink=sink,
                                 variant=self.variant, out=out[None])


def make_backend(name: str, **kw):
    if name == "cuda":
        return CudaBackend(**kw)
    if name == "interpret":
        return InterpretBackend()
    if name == "torch":
        return TorchBackend()
    raise ValueError(f"unknown backend {name!r}; valid: {BACKENDS}")
