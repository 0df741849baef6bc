"""Sweep the selection kernel's pass-2 block (BLK2 = CAP x blocks) and warps on the last 2,048-query chunk
of S = 262,144 (v4-flash: 65,536 visible rows, K = 512, the scores of the FP8 score kernel), and v3.2's
shape (K = 2,048) on its last chunk of S = 131,072. Every variant's key lists must equal the default's.

    python benchmarks/gpu_select_sweep.py OUT_DIR     (writes select-sweep.json; a table last)"""
import json
import os
import sys

import torch
import triton

from csa_dsl.benchmarks import commit, device_name, versions
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer.cost import select_capacity
from kernels_triton.quant import kernel as Q

res = []
for name, S, m, topk, W in (("v4-flash", 262144, 4, 512, 128), ("v3.2", 131072, 1, 2048, 0)):
    n, HI, DI = 2048, 64, 128
    T, s0 = S // m, S - n
    g = torch.Generator(device="cuda").manual_seed(S)
    q = torch.randn(n, HI, DI, device="cuda", generator=g).bfloat16()
    w = torch.rand(n, HI, device="cuda", generator=g)
    k = torch.randn(T, DI, device="cuda", generator=g).bfloat16()
    k8 = torch.empty(T, DI, dtype=torch.float8_e4m3fn, device="cuda")
    ks = torch.empty(T, device="cuda")
    Q.pack_keys(k, k8, ks, fmt="e2m1", block=32)
    scores = torch.empty(n, T, device="cuda")
    K.score_chunk_fp8(q, w, k8, ks, scores, s_first=s0, ratio=m, q_format="e2m1", q_block=32)
    cap = select_capacity(topk)
    cand = torch.empty(n, cap, dtype=torch.int64, device="cuda")
    ref = None
    for blocks in (1, 2, 4):
        for warps in (4, 8):
            out = torch.full((n, W + topk), -7, dtype=torch.int32, device="cuda")

            def run():
                K._select_kernel[(n,)](scores, cand, out, out, s0, n, topk, 0, scores.stride(0), cand.stride(0),
                                       out.stride(0), RATIO=m, CAP=cap, W=W, WP=max(1, triton.next_power_of_2(W)),
                                       EMULATE_MAXNUM=False, VARLEN=False, BLK2=cap * blocks, num_warps=warps)
            try:
                run()
                ms = triton.testing.do_bench(run, warmup=50, rep=300, return_mode="median")
                same = ref is None or bool(torch.equal(out, ref))
                ref = out.clone() if ref is None else ref
            except Exception as e:      # noqa: BLE001  a config that does not compile
                ms, same = None, None
                print("fail", name, blocks, warps, str(e)[:160])
            gbs = None if ms is None else 2 * 4 * n * (S - n // 2) / m / (ms * 1e-3) / 1e9   # two reads of the visible
            res.append({"shape": name, "S": S, "blocks": blocks, "BLK2": cap * blocks, "warps": warps, "ms": ms,
                        "two_reads_gb_s": gbs, "same_as_default": same})
            print(f"{name:9} BLK2={cap * blocks:6} warps={warps}  {ms}  same={same}")
json.dump({"commit": commit(), "device": device_name(), "versions": versions(), "rows": res},
          open(os.path.join(sys.argv[1], "select-sweep.json"), "w"), indent=1)
