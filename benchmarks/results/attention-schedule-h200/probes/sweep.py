"""Probe: the seesaw attention's per-CTA fixed cost. Times the kernel on n queries with NI keys per query
(key lists all from L2: one list for every query; and random rows from an 81,920-row table), for several NI,
and fits t_cta = a + b * pairs (t_cta = time * SMs / CTAs)."""
import json, os, sys, time
import torch, triton
from kernels_tilelang.sparse_mla import kernel as sm

def main():
    OUT = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else ""
    nis = [128, 256, 512, 1024, 2048]
    shapes = [(64, ni) for ni in nis] + [(128, 256), (128, 1152)]
    t0 = time.time()
    print("precompile", sm.precompile([(h, 512, 512, ni, True, False) for h, ni in shapes], ("seesaw",)),
          round(time.time() - t0), flush=True)
    n, R = 65536, 81920
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    res = []
    g = torch.Generator(device="cuda").manual_seed(1)
    kv = torch.randn(1, R, 512, device="cuda", dtype=torch.bfloat16, generator=g)
    for H, NI in shapes:
        q = torch.randn(1, n, H, 512, device="cuda", dtype=torch.bfloat16, generator=g)
        sink = torch.randn(H, device="cuda")
        out = torch.empty(1, n, H, 512, device="cuda", dtype=torch.bfloat16)
        lists = {
            "rand": torch.randint(0, R, (1, n, NI), device="cuda", generator=g, dtype=torch.int32),
            "same": torch.randint(0, R, (1, 1, NI), device="cuda", generator=g, dtype=torch.int32).expand(1, n, NI).contiguous(),
        }
        for case, idx in lists.items():
            fn = lambda: sm.sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=sink, variant="seesaw", out=out)
            fn(); torch.cuda.synchronize()
            ms = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
            tf = 2 * H * 1024 * n * NI / ms / 1e9
            ctas = n * (H // 64)
            us_cta = ms * 1e3 * sms / ctas
            res.append({"tag": tag, "H": H, "NI": NI, "case": case, "ms": ms, "tflops": tf, "us_per_cta": us_cta,
                        "pairs": NI // 128})
            print(f"{tag} H={H} NI={NI:5d} {case:5s} {ms:8.3f} ms {tf:6.1f} TFLOP/s {us_cta:7.2f} us/CTA", flush=True)
        del q, out
    for case in ("rand", "same"):
        pts = [(r["pairs"], r["us_per_cta"]) for r in res if r.get("case") == case and r.get("H") == 64]
        nn = len(pts); sx = sum(p for p, _ in pts); sy = sum(t for _, t in pts)
        sxx = sum(p * p for p, _ in pts); sxy = sum(p * t for p, t in pts)
        b = (nn * sxy - sx * sy) / (nn * sxx - sx * sx); a = (sy - b * sx) / nn
        print(f"fit {case}: t_cta = {a:.2f} us + {b:.3f} us/pair", flush=True)
        res.append({"fit": case, "a_us": a, "b_us_per_pair": b})
    json.dump(res, open(os.path.join(OUT, f"sweep-{tag}.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
