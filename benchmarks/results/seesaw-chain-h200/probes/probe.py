"""Probe: is the seesaw attention bound by its HBM gathers? Times it on 65,536 queries with keys drawn
from the whole table (rand), from 2,048 rows (l2: the table slice sits in L2), or one list for every
query (same); PROBE_SEGS < 8 gathers only that many 128-B segments of each 1 KiB row (wrong numbers,
the time of a smaller row: 5 segments ~ an FP8 row of 576 B)."""
import json, os, sys, time
import torch, triton
from kernels_tilelang.sparse_mla import kernel as sm

def main():
    segs = os.environ.get("PROBE_SEGS", "8")
    OUT = sys.argv[1]
    t0 = time.time()
    shapes = {"flash": (64, 640), "pro": (128, 1152)}
    print("precompile", sm.precompile([(h, 512, 512, ni, True, False) for h, ni in shapes.values()], ("seesaw",)),
          round(time.time() - t0), flush=True)
    from kernels_tilelang.sparse_mla import naive
    tag = os.environ.get("PROBE_TAG", "")
    torch.manual_seed(7)
    for H, NI in shapes.values():
        q = (torch.randn(1, 512, H, 512, device="cuda") * 0.5).to(torch.bfloat16)
        kv = (torch.randn(1, 4096, 512, device="cuda") * 0.5).to(torch.bfloat16)
        idx = torch.randint(0, 4096, (1, 512, NI), device="cuda", dtype=torch.int32)
        idx = idx.masked_fill(torch.rand(idx.shape, device="cuda") < 0.2, -1)
        sink = torch.randn(H, device="cuda")
        out = torch.full((1, 512, H, 512), float("nan"), device="cuda", dtype=torch.bfloat16)
        sm.sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=sink, variant="seesaw", out=out)
        ref = naive.sparse_attention(q, kv, idx, 512 ** -0.5, 512, sink)
        err = float((out.float() - ref.float()).norm() / ref.float().norm())
        print(f"check {tag} H={H} rel_err {err:.3e} nan {int(torch.isnan(out.float()).sum())}", flush=True)
    n, R = 65536, 81920
    res = []
    for name, (H, NI) in shapes.items():
        g = torch.Generator(device="cuda").manual_seed(1)
        q = torch.randn(1, n, H, 512, device="cuda", dtype=torch.bfloat16, generator=g)
        kv = torch.randn(1, R, 512, device="cuda", dtype=torch.bfloat16, generator=g)
        sink = torch.randn(H, device="cuda")
        out = torch.empty(1, n, H, 512, device="cuda", dtype=torch.bfloat16)
        lists = {
            "rand": torch.randint(0, R, (1, n, NI), device="cuda", generator=g, dtype=torch.int32),
            "l2": torch.randint(0, 2048, (1, n, NI), device="cuda", generator=g, dtype=torch.int32),
            "same": torch.randint(0, R, (1, 1, NI), device="cuda", generator=g, dtype=torch.int32).expand(1, n, NI).contiguous(),
        }
        for case, idx in lists.items():
            fn = lambda: sm.sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=sink, variant="seesaw", out=out)
            fn(); torch.cuda.synchronize()
            ms = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
            tf = 2 * H * 1024 * n * NI / ms / 1e9
            res.append({"tag": tag, "shape": name, "case": case, "segs": segs, "ms": ms, "tflops": tf})
            print(f"{tag} {name:6s} {case:5s} segs={segs} {ms:7.3f} ms {tf:6.1f} TFLOP/s", flush=True)
    json.dump(res, open(os.path.join(OUT, f"gather-probe-{tag}segs{segs}-{time.time_ns()}.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
