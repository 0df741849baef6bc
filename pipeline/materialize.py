"""The naive path of the public DeepSeek reference code: the baseline the benchmarks beat.

The indexer materialises the full [B, S, HI, T] fp32 score einsum, sums the heads
into [B, S, T], masks, and calls torch.topk: 4.4 TB at S = 262,144, so it only runs
at small S. Compressors and attention are the reference ones (on CUDA the
attention may be the TileLang kernel, to isolate the indexer's cost).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from csa_dsl.spec import Pipeline

from . import reference as ref


def indexer_topk_materialized(idx_q: torch.Tensor, idx_w: torch.Tensor, idx_k: torch.Tensor, topk: int,
                              ratio: int) -> torch.Tensor:
    B, S = idx_q.shape[:2]
    T = idx_k.shape[1]
    score = torch.einsum("bshd,btd->bsht", idx_q.float(), idx_k.float())   # [B, S, HI, T] fp32
    score = (score.relu_() * idx_w.float().unsqueeze(-1)).sum(dim=2)        # [B, S, T]
    vis = torch.arange(1, S + 1, device=score.device).unsqueeze(1) // ratio
    mask = torch.arange(T, device=score.device).unsqueeze(0) >= vis
    score += torch.where(mask, float("-inf"), 0.0)
    k = min(topk, T)
    idx = score.topk(k, dim=-1).indices
    return torch.where(idx >= vis.unsqueeze(0), -1, idx).to(torch.int32)


def forward(spec: Pipeline, inputs: Dict[str, torch.Tensor], return_indices: bool = False,
            attention: Optional[Callable] = None):
    """The whole forward with a materialised indexer. `attention(q, kv, keys, scale, v_dim, sink)` -> fp32/bf16
    [B, S, H, Dv]; default: the reference sparse attention."""
    q = inputs["q"]
    B, S = q.shape[:2]
    a = spec.attention
    k_idx = ref.index_keys(spec, inputs)
    rows = ref.attention_rows(spec, inputs["kv"], ref.compressed_kv(spec, inputs))
    sel = indexer_topk_materialized(inputs["idx_q"], inputs["idx_w"], k_idx, spec.indexer.topk, spec.ratio)
    pos = torch.arange(S, device=q.device)
    keys = ref.key_list(spec, pos, sel, S)
    sink = inputs.get("sink") if a.sink else None
    att = (attention or ref.sparse_attention)(q, rows, keys, a.softmax_scale, a.v_dim, sink)
    out = ref.finish_output(spec, att, pos)
    return (out, keys) if return_indices else out
