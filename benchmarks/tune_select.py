"""Measure the top-k selection kernel's launch configurations on long rows (GPU).

    python benchmarks/tune_select.py --out DIR

For v4-flash (CAP 1024), v4-pro (2048) and v3.2 (4096) at S = 262,144 (131,072 for v3.2),
fills the score + group-max buffers of three chunks (early, middle, last) with the real
score kernel, then times select_chunk for each (compaction block, warps) with do_bench,
and checks that every configuration returns the same key lists. Prints the best per CAP.
"""
import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton.testing  # noqa: E402

import csa_dsl  # noqa: E402
from kernels_triton import indexer as ki  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    res = []
    for name, S in (("v4-flash", 262144), ("v4-pro", 262144), ("v3.2", 131072)):
        spec = csa_dsl.preset(name)
        ix, m = spec.indexer, spec.ratio
        T = S // m
        g = torch.Generator(device="cuda").manual_seed(0)
        C = 2048
        k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
        chunks = [S // 4, S // 2, S - C]
        bufs = []
        for s0 in chunks:
            q = torch.randn(C, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
            w = torch.randn(C, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
            b = ki.chunk_buffers(C, T, ix.topk, "cuda")
            ki.score_chunk(q, w, k, s0, m, b["scores"], b["gmax"])
            bufs.append((s0, b))
        cap = ki.select_capacity(ix.topk)
        k_eff = min(ix.topk, T)
        W = spec.attention.window
        ref_out = None
        for blk, warps in itertools.product(sorted({cap, 2048, 4096}), (4, 8, 16)):
            if blk < cap:
                continue
            rec = {"preset": name, "S": S, "cap": cap, "blk": blk, "warps": warps}
            try:
                outs = [torch.empty(C, W + k_eff, dtype=torch.int32, device="cuda") for _ in bufs]

                def run():
                    for (s0, b), o in zip(bufs, outs):
                        ki.select_chunk(b["scores"], b["gmax"], s0, C, m, k_eff, ix.topk, o, 0, W, b["cand"],
                                        config=(blk, warps))
                run()
                got = [o.sort(-1).values for o in outs]
                if ref_out is None:
                    ref_out = got
                rec["same"] = all(torch.equal(a, b) for a, b in zip(got, ref_out))
                rec["ms_3chunks"] = triton.testing.do_bench(run, warmup=50, rep=300, return_mode="median")
                # bytes of the two reads: gmax (1/16) + scores, over the visible part of each row
                vis = sum(((s0 + torch.arange(C, device="cuda") + 1) // m).sum().item() for s0, _ in bufs)
                rec["GBps"] = vis * 4 * (1 + 1 / 16) / (rec["ms_3chunks"] * 1e-3) / 1e9
            except Exception as e:  # noqa: BLE001
                rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            print(rec, flush=True)
            res.append(rec)
        del bufs
        torch.cuda.empty_cache()
    with open(os.path.join(args.out, "tune_select.json"), "w") as f:
        json.dump(res, f, indent=1)
    for cap in sorted({r["cap"] for r in res}):
        ok = [r for r in res if r["cap"] == cap and r.get("same") and "ms_3chunks" in r]
        if ok:
            best = min(ok, key=lambda r: r["ms_3chunks"])
            print(f"best CAP {cap}: blk {best['blk']}, warps {best['warps']}: {best['ms_3chunks']:.3f} ms "
                  f"({best['GBps']:.0f} GB/s)")


if __name__ == "__main__":
    main()
