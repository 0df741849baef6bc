"""Per-chunk scaling of the FP8 score walk (with the group maxima) and the selection, v3.2's and v4-flash's shapes:
median ms of one 2,048-query chunk at several positions, and the forward's sum over every chunk estimated from them."""
import json, os, sys
import torch, triton
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer.cost import select_capacity

OUT = sys.argv[1]
res = []
n = 2048
for name, S, ratio, topk in (("v3.2", 131072, 1, 2048), ("v4-flash", 262144, 4, 512)):
    T = S // ratio
    cap = select_capacity(topk)
    q, w, k = chunk_operands(n, T, 0)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    out = torch.full((n, T + 64), float("nan"), device="cuda")
    gmax = torch.empty(n, cap, device="cuda")
    keys = torch.full((n, topk), -7, dtype=torch.int32, device="cuda")
    for c in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, S // n - 1):
        if c >= S // n:
            continue
        s_first = c * n
        sc = lambda: K.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, gmax=gmax)
        sc()
        sel = lambda: K.select_chunk(out, keys, s_first=s_first, ratio=ratio, k_eff=topk, topk=topk, gmax=gmax)
        t_sc = triton.testing.do_bench(sc, warmup=5, rep=50, return_mode="median")
        t_sel = triton.testing.do_bench(sel, warmup=5, rep=50, return_mode="median")
        pairs = sum(min(T, (s + 1) // ratio) for s in range(s_first, s_first + n))
        res.append({"preset": name, "chunk": c, "s_first": s_first, "score_ms": t_sc, "select_ms": t_sel,
                    "visible_pairs": pairs, "score_ps_per_pair": t_sc * 1e9 / pairs})
        print(res[-1], flush=True)
    del out, gmax, q, w, k, q8, k8
    torch.cuda.empty_cache()
json.dump(res, open(os.path.join(OUT, "scale-probe.json"), "w"), indent=1)
for name in ("v3.2", "v4-flash"):
    rs = [r for r in res if r["preset"] == name]
    S = 131072 if name == "v3.2" else 262144
    nch = S // n
    import bisect
    cs = [r["chunk"] for r in rs]
    def interp(key, c):
        i = bisect.bisect_left(cs, c)
        if i < len(cs) and cs[i] == c:
            return rs[i][key]
        a, b = rs[i - 1], rs[i]
        f = (c - a["chunk"]) / (b["chunk"] - a["chunk"])
        return a[key] + f * (b[key] - a[key])
    tot_sc = sum(interp("score_ms", c) for c in range(nch))
    tot_sel = sum(interp("select_ms", c) for c in range(nch))
    print(f"{name}: estimated over {nch} chunks: score {tot_sc:.1f} ms, selection {tot_sel:.1f} ms")
    for r in rs:
        print(f"  chunk {r['chunk']:4}  score {r['score_ms']:.3f} ms ({r['score_ps_per_pair']:.2f} ps/pair)  select {r['select_ms']:.3f}")
