"""Sweep the score kernel's launch parameters, bf16 against the quantised (FP8 MMA) variant, on the last
2,048-query chunk of S = 262,144 (v4-flash: T = 65,536 keys, the most visible). Prints ms per chunk."""
import json
import os
import sys

import torch
import triton

from gpu_score_check import pack
from kernels_triton.indexer import kernel as K

S, n, HI, DI, m = 262144, 2048, 64, 128, 4
T, s0 = S // m, S - n
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(n, HI, DI, device="cuda", generator=g).bfloat16()
w = torch.rand(n, HI, device="cuda", generator=g)
k = torch.randn(T, DI, device="cuda", generator=g).bfloat16()
(k8, ks), (q8, qs) = pack(k), pack(q)               # keys and queries as the composed program packs them
out = torch.empty(n, T + 256, device="cuda")
res = []
for quant in (False, True):
    for bt in (64, 128):
        for warps in (4, 8):
            for stages in (2, 3, 4):
                BQ = K.score_block_queries(HI)

                def run():      # the seg pointer is never read unpacked (VARLEN off): any tensor
                    K._score_kernel[(triton.cdiv(n, BQ),)](
                        q8 if quant else q, qs, w, k8 if quant else k, ks, out, w, s0, n, T, q.stride(0), w.stride(0),
                        DI, out.stride(0), RATIO=m, HI=HI, DI=DI, HP=64, DP=128, BQ=BQ, BT=bt, IEEE=False,
                        QUANT=quant, OPERAND=2 if quant else 1, VARLEN=False, EMULATE=False, num_warps=warps,
                        num_stages=stages)
                try:
                    ms = triton.testing.do_bench(run, warmup=50, rep=300, return_mode="median")
                except Exception as e:      # a config that does not fit (shared memory, registers)
                    ms = None
                    print("fail", quant, bt, warps, stages, str(e)[:120])
                res.append({"quant": quant, "BT": bt, "warps": warps, "stages": stages, "ms": ms})
                print(f"quant={quant!s:5} BT={bt:3} warps={warps} stages={stages}  {ms}")
json.dump(res, open(os.path.join(sys.argv[1], "score-sweep.json"), "w"), indent=1)
