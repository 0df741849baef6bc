"""FP8 score alone: own chunk (last 2,048 queries of S=65,536) vs the same chunk inside a packed 4 x 65,536 batch."""
import json, sys
import torch, triton
import kernels_triton
from kernels_triton.indexer import kernel as K
from kernels_triton.quant import kernel as Q
from kernels_triton.varlen import kernel as V
from pipeline.lang.presets import preset
print("kernels_triton from", kernels_triton.__file__)
ix = preset("v4-flash").indexer
S, n, ratio = 65536, 2048, 4
T = S // ratio
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
w = torch.randn(n, ix.heads, device="cuda", generator=g)
k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
q8, qs = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(q.shape[:2], device="cuda")
k8, ks = torch.empty(k.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(T, device="cuda")
Q.pack_rows(q, q8, qs, fmt="e2m1", block=32)
Q.pack_rows(k, k8, ks, fmt="e2m1", block=32)
k8p, ksp = k8.repeat(4, 1), ks.repeat(4)
cu = torch.arange(0, 4 * S + 1, S, device="cuda", dtype=torch.int32)
tok = torch.empty(4 * S, V.SEG_COLS, device="cuda", dtype=torch.int32)
V.segments(cu, tok, ratio=ratio)
res = []
for name, s_first, seg in [("own last", S - n, None), ("packed last of seq 3", 4 * S - n, tok[4 * S - n:]),
                           ("own middle", S // 2 - n, None), ("packed middle of seq 1", S + S // 2 - n, tok[S + S // 2 - n:S + S // 2])]:
    out = torch.full((n, T + 64), float("nan"), device="cuda")
    kk, kks = (k8, ks) if seg is None else (k8p, ksp)
    run = lambda: K.score_chunk_fp8(q8, qs, w, kk, kks, out, s_first=s_first if seg is None else 0, ratio=ratio, seg=seg)
    run()
    ms = triton.testing.do_bench(run, warmup=20, rep=300, return_mode="median")
    vis = ((S - n if "last" in name else S // 2 - n) + n) // ratio
    res.append({"case": name, "median_ms": ms, "sum_vis": float(out[-1, :vis - 64].double().sum())})
json.dump(res, open(f"{sys.argv[1]}/score-packed-{sys.argv[2]}.json", "w"), indent=1)
for r in res:
    print(f"{sys.argv[2]:<12} {r['case']:<26} {r['median_ms']:7.3f} ms  {r['sum_vis']:.6e}")
