"""Probe: the Gluon score walk at ratio 1 (V3.2's shapes: 131,072 keys, CAP 4,096 group maxima), 2 x 4 against
4 x 2 (no spill since the opaque-zero store bound), FP8 and bf16 operands, last and middle chunk: time (alternating,
3 rounds) and bit-equality of the scores (NaN-poisoned) and the group maxima."""
import json, os, sys
import torch, triton
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import score_gluon as sg
from kernels_triton.indexer.kernel import score_block_queries
from kernels_triton.indexer.cost import select_capacity

OUT = sys.argv[1]
res = []
S, n, cap = 131072, 2048, select_capacity(2048)
for s_first in (S - n, S // 2):
    q, w, k = chunk_operands(n, S, s_first + 7)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    for dt in ("fp8", "bf16"):
        qq, kk = (q8, k8) if dt == "fp8" else (q8.to(torch.bfloat16), k8.to(torch.bfloat16))
        outs = {}
        fns = {}
        for name, walk in (("2x4", sg.WALK_2X4), ("4x2", sg.WALK_4X2)):
            out = torch.full((n, S + 64), float("nan"), device="cuda")
            gm = torch.full((n, cap), float("nan"), device="cuda")
            fn = (lambda out=out, gm=gm, walk=walk: sg.score_chunk_gluon(qq, qs, w, kk, ks, out, s_first=s_first, ratio=1,
                                                                         store_queries=score_block_queries(64), gmax=gm, walk=walk))
            fn(); torch.cuda.synchronize()
            outs[name] = (out, gm)
            fns[name] = fn
        same = bool(torch.equal(outs["2x4"][0].view(torch.int32), outs["4x2"][0].view(torch.int32)) and
                    torch.equal(outs["2x4"][1].view(torch.int32), outs["4x2"][1].view(torch.int32)))
        t = {"2x4": [], "4x2": []}
        for _ in range(3):
            for name in ("2x4", "4x2"):
                t[name].append(triton.testing.do_bench(fns[name], warmup=10, rep=100, return_mode="median"))
        rec = {"s_first": s_first, "operands": dt, "same_bits": same, "ms_2x4": t["2x4"], "ms_4x2": t["4x2"]}
        res.append(rec)
        print(rec, flush=True)
        del outs, fns
        torch.cuda.empty_cache()
json.dump(res, open(os.path.join(OUT, "walk-probe.json"), "w"), indent=1)
for r in res:
    print(f"{r['operands']:5} from {r['s_first']:7}  2x4 {min(r['ms_2x4']):.3f}  4x2 {min(r['ms_4x2']):.3f}  same {r['same_bits']}")
