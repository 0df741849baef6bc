"""The FP8 score walk (with the group maxima) on FP4-grid operands (V4's packing) and on full e4m3 operands
(V3.2's: one scale a 128-channel row), same shapes, alternating: does the time depend on the operands' bits?"""
import json, os, sys
import torch, triton
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer.cost import select_capacity

OUT = sys.argv[1]
n = 2048


def e4m3(x):
    scale = (x.float().abs().amax(dim=-1) / 448.0).clamp_min(1e-30)
    return (x.float() / scale[..., None]).to(torch.float8_e4m3fn), scale


res = []
for name, S, ratio, topk in (("v3.2", 131072, 1, 2048), ("v4-flash", 262144, 4, 512)):
    T = S // ratio
    s_first = S - n
    q, w, k = chunk_operands(n, T, 5)
    ops = {"fp4-grid": (pack(q), pack(k)), "e4m3": (e4m3(q), e4m3(k))}
    out = torch.full((n, T + 64), float("nan"), device="cuda")
    gmax = torch.empty(n, select_capacity(topk), device="cuda")
    fns = {}
    for tag, ((q8, qs), (k8, ks)) in ops.items():
        mant = (q8.view(torch.uint8) & 0x7).float().mean().item()
        fns[tag] = (lambda q8=q8, qs=qs, k8=k8, ks=ks: K.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first,
                                                                        ratio=ratio, gmax=gmax))
        fns[tag]()
        print(name, tag, "mean mantissa code", round(mant, 3), flush=True)
    t = {tag: [] for tag in fns}
    for _ in range(3):
        for tag, fn in fns.items():
            t[tag].append(triton.testing.do_bench(fn, warmup=20, rep=300, return_mode="median"))
    for tag in fns:
        res.append({"preset": name, "operands": tag, "ms": t[tag]})
        print(res[-1], flush=True)
    del out, gmax, ops, fns
    torch.cuda.empty_cache()
json.dump(res, open(os.path.join(OUT, "operand-probe.json"), "w"), indent=1)
