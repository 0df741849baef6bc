"""Probe: the selection alone, last 2,048-query chunk at 262,144, with the tile maxima (naive.tile_maxima of the
same scores, restored before each call: the selection overwrites them) against without (its own pass 1)."""
import json, os, sys
import torch, triton
from kernels_triton.indexer import kernel as ki, naive
from kernels_triton.indexer.cost import candidate_slots, tile_maxima_width
from gpu_select_check import digest

def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    S, ratio, n = 262144, 4, 2048
    T = S // ratio
    recs = []
    for topk in (512, 1024, 2048):
        g = torch.Generator(device="cuda").manual_seed(topk)
        scores = torch.randn(n, T + 256, device="cuda", generator=g)
        out = torch.empty(n, topk, dtype=torch.int32, device="cuda")
        cand = torch.empty(n, candidate_slots(topk), dtype=torch.int32, device="cuda")
        gm0 = naive.tile_maxima(scores, S - n, ratio, tile_maxima_width(T + 256))
        gm = gm0.clone()
        def plain():
            ki.select_chunk(scores, out, cand, s_first=S - n, ratio=ratio, k_eff=topk, topk=topk)
        def copy():
            gm.copy_(gm0)
        def tiles():
            gm.copy_(gm0)
            ki.select_chunk(scores, out, cand, s_first=S - n, ratio=ratio, k_eff=topk, topk=topk, gmax=gm)
        plain(); d0 = digest(out)
        tiles(); d1 = digest(out)
        t = {name: triton.testing.do_bench(f, warmup=20, rep=200, return_mode="median")
             for name, f in (("plain", plain), ("copy", copy), ("tiles+copy", tiles))}
        rec = {"tag": tag, "topk": topk, "same_lists": d0 == d1, **t, "tiles": t["tiles+copy"] - t["copy"]}
        recs.append(rec)
        print(f"{tag} top-{topk:5d} plain {t['plain']:.3f} ms  tiles {rec['tiles']:.3f} ms (copy {t['copy']:.3f})  "
              f"same lists {d0 == d1}", flush=True)
    json.dump(recs, open(os.path.join(out_dir, f"select-tiles-{tag}.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
