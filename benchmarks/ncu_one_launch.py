"""One launch of a kernel, warmed up first, inside a CUDA profiler range, for Nsight Compute:

    ncu --profile-from-start off --set full -o OUT/score python benchmarks/ncu_one_launch.py score-fp8
    ncu --import OUT/score.ncu-rep --page source --print-source sass --csv > OUT/score-sass.csv

Kernels: `score-fp8` (the FP8 score kernel on the last 2,048-query chunk of v4-flash at S = 262,144:
gpu_score_check.score_launch), `score-bf16` (the bf16 one, v4-flash-bf16's), `attention-v4-flash` and
`attention-v4-pro` (the default attention kernel on 16,384 queries of `csa-dsl bench attention`'s inputs:
gpu_attention_ab.attention_launch). Only the launch between profiler start and stop is profiled; the warm-up
launches compile and autotune outside it."""
import sys

import torch

from gpu_attention_ab import attention_launch
from gpu_score_check import score_launch

S = 262144
KERNELS = {"score-fp8": lambda: score_launch(S - 2048, fp8=True, S=S)[0],
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
