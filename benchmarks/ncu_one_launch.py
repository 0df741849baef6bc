"""One launch of a kernel, warmed up first, inside a CUDA profiler range, for Nsight Compute:

    ncu --profile-from-start off --set full -o OUT/score python benchmarks/ncu_one_launch.py score-fp8
    ncu --import OUT/score.ncu-rep --page source --print-source sass --csv > OUT/score-sass.csv

Kernels: `score-fp8` (the FP8 score kernel on the last 2,048-query chunk of v4-flash at S = 262,144, operands
as gpu_score_check.score_alone packs them), `score-bf16` (the bf16 one, v4-flash-bf16's), `attention-v4-flash`
and `attention-v4-pro` (the default attention kernel on 16,384 queries of `csa-dsl bench attention`'s inputs,
as gpu_attention_ab.attention_alone sets them up). Only the launch between profiler start and stop is
profiled; the warm-up launches compile and autotune outside it."""
import sys

import torch

from csa_dsl.benchmarks import attention_inputs
from gpu_score_check import chunk_operands, pack
from kernels_tilelang.sparse_mla import kernel as sparse_mla
from kernels_triton.indexer import kernel as indexer_kernel
from pipeline.lang.presets import preset


def score(fp8: bool, S: int = 262144, n: int = 2048):
    ratio, T = 4, S // 4
    s_first = S - n
    q, w, k = chunk_operands(n, T, s_first)
    out = torch.empty((n, S // ratio + 64), device="cuda")
    if fp8:
        (q8, qs), (k8, ks) = pack(q), pack(k)
        return lambda: indexer_kernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio)
    return lambda: indexer_kernel.score_chunk(q, w, k, out, s_first=s_first, ratio=ratio)


def attention(spec_name: str, n: int = 16384):
    a = preset(spec_name).attention
    q, kv, keys = attention_inputs(preset(spec_name), n, n + n // preset(spec_name).ratio, seed=0)
    sink = torch.randn(a.heads, device="cuda") if a.sink else None
    out = torch.empty(1, n, a.heads, a.v_dim, device="cuda", dtype=torch.bfloat16)
    return lambda: sparse_mla.sparse_mla_fwd(q, kv, keys, a.softmax_scale, a.v_dim, sink=sink, out=out)


KERNELS = {"score-fp8": lambda: score(True), "score-bf16": lambda: score(False),
           "attention-v4-flash": lambda: attention("v4-flash"), "attention-v4-pro": lambda: attention("v4-pro")}


def main():
    run = KERNELS[sys.argv[1]]()
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    run()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
