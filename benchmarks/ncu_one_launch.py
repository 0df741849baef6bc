"""One launch of a kernel, warmed up first, inside a CUDA profiler range, for Nsight Compute:

    ncu --profile-from-start off --set full -o OUT/score python benchmarks/ncu_one_launch.py score-fp8
    ncu --import OUT/score.ncu-rep --page source --print-source sass --csv > OUT/score-sass.csv

Kernels: `score-fp8` (the FP8 score kernel on the last 2,048-query chunk of v4-flash at S = 262,144:
gpu_score_check.score_launch), `score-fp8-gmax` (the same, also keeping the selection's group maxima, as the
composed program runs it), `select-gmax` (the selection of that chunk from those scores and maxima),
`pack-queries` (the FP4-step packing of that chunk's index queries), `select-v3.2` (the top-2,048 selection of
V3.2's last chunk at 131,072, 131,072 columns: the same launches), `select-v3.2-early` and `select-v4-flash-early`
(the selection of an early chunk, queries 8,192-10,239 of v3.2 and 14,336-16,383 of v4-flash, where its fixed
per-row costs dominate), `score-bf16` (the bf16 one, v4-flash-bf16's),
`attention-v4-flash` and `attention-v4-pro` (the default attention kernel on 16,384 queries of `csa-dsl bench
attention`'s inputs: gpu_attention_ab.attention_launch). Only the launch between profiler start and stop is profiled; the warm-up
launches compile and autotune outside it."""
import sys

import torch

from gpu_attention_ab import attention_launch
from gpu_score_check import chunk_operands, pack, score_launch
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.indexer.cost import candidate_slots, select_capacity
from kernels_triton.quant import kernel as quant_kernel
from pipeline.lang.presets import preset

S = 262144


def last_chunk_launches(n: int = 2048, name: str = "v4-flash", seq: int = S) -> dict:
    """The last n-query chunk of preset `name` at `seq` as the composed program runs it: the FP8 score walk that also
    keeps the group maxima, the selection from them, and the packing of the chunk's index queries (random index
    operands of 64 heads x 128 dims, as every preset's, packed with FP4 steps)."""
    spec = preset(name)
    ix, ratio, s_first = spec.indexer, spec.ratio, seq - n
    T = seq // ratio
    q, w, k = chunk_operands(n, T, s_first)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    out = torch.full((n, T + 64), float("nan"), device="cuda")
    gmax = torch.empty(n, select_capacity(ix.topk), device="cuda")
    keys = torch.empty(n, ix.topk, dtype=torch.int32, device="cuda")
    cand = torch.empty(n, candidate_slots(ix.topk), dtype=torch.int32, device="cuda")
    q8b, qsb = torch.empty_like(q8), torch.empty_like(qs)

    def score():
        indexer_kernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, gmax=gmax)
    score()
    return {"score-fp8-gmax": score,
            "select-gmax": lambda: indexer_kernel.select_chunk(out, keys, cand, s_first=s_first, ratio=ratio,
                                                               k_eff=ix.topk, topk=ix.topk, gmax=gmax),
            "pack-queries": lambda: quant_kernel.pack_rows(q, q8b, qsb, fmt="e2m1", block=32)}


KERNELS = {"score-fp8": lambda: score_launch(S - 2048, fp8=True, S=S)[0],
           "score-fp8-gmax": lambda: last_chunk_launches()["score-fp8-gmax"],
           "select-gmax": lambda: last_chunk_launches()["select-gmax"],
           "pack-queries": lambda: last_chunk_launches()["pack-queries"],
           "select-v3.2": lambda: last_chunk_launches(name="v3.2", seq=131072)["select-gmax"],
           "select-v3.2-early": lambda: last_chunk_launches(name="v3.2", seq=10240)["select-gmax"],
           "select-v4-flash-early": lambda: last_chunk_launches(name="v4-flash", seq=16384)["select-gmax"],
           "score-bf16": lambda: score_launch(S - 2048, fp8=False, S=S)[0],
           "attention-v4-flash": lambda: attention_launch("v4-flash", 16384)[0],
           "attention-v4-pro": lambda: attention_launch("v4-pro", 16384)[0]}


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
