#!/usr/bin/env python
"""Check and time the Triton compressor (and in-place RoPE) kernels on a GPU.

    python benchmarks/gpu_compressor_check.py --out DIR [--no-sweep]

1. correctness at S = 16,384 (B = 1) of both v4-flash compressors (attention: D=512, m=4,
   overlap; indexer: D=128, m=4, overlap, Hadamard) against kernels_triton/compressor/naive.py
   on the same GPU, the kernel writing into a NaN-poisoned `out`; bound per element
   |kernel - ref| <= ulp_bf16(|ref|) + ulp_bf16(max |ref row|), <= 1% of elements differing.
   The inverse RoPE kernel vs kernels_triton/rope/naive.py rope_rows_bf16 (bitwise).
2. triton.testing.do_bench median at S = 65,536 and 262,144 (B = 1), achieved GB/s
   (both fp32 inputs read once + bf16 rows written).
3. (unless --no-sweep) a few launch configs (block_rows x num_warps) at S = 262,144.
Each case is caught and reported on its own. DIR/compressor_results.json; a table last.
About 30-60 s on an H100.
"""
import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402

from kernels_triton.compressor import cost as comp_cost  # noqa: E402
from kernels_triton.compressor import kernel as comp  # noqa: E402
from kernels_triton.compressor import naive as comp_ref  # noqa: E402
from kernels_triton.rope import cost as rope_cost  # noqa: E402
from kernels_triton.rope import kernel as krope  # noqa: E402
from kernels_triton.rope import naive as rope_ref  # noqa: E402
from kernels_triton.rope.tables import cos_sin  # noqa: E402
from pipeline.lang.presets import preset  # noqa: E402
from pipeline.metrics import bf16_rounding_check  # noqa: E402
from pipeline.stages.compressor import params, rotary  # noqa: E402


def kw(c, positions=262144):
    cos, sin = (t.contiguous() for t in cos_sin(rotary(c.rope), torch.arange(positions, device="cuda")))
    return dict(params(c), cos=cos, sin=sin)

SWEEP = {"attention": [(1, 4), (1, 8), (2, 4), (2, 8)], "indexer": [(2, 4), (4, 4), (4, 8), (8, 8)]}


def log(*a):
    print(*a, flush=True)


def compare(k, r):
    err, bound, frac = bf16_rounding_check(k, r)
    ratio = (err / bound).max().item()
    return {"max_err_over_bound": ratio, "frac_differ": frac, "ok": ratio <= 1.0 and frac <= 0.01}


def inputs(B, S, c, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    cd = c.coff * c.dim
    return (torch.randn(B, S, cd, device="cuda", generator=g), torch.randn(B, S, cd, device="cuda", generator=g),
            0.5 * torch.randn(c.ratio, cd, device="cuda", generator=g),
            1 + 0.1 * torch.randn(c.dim, device="cuda", generator=g))


def case(results, name, fn):
    t = time.time()
    try:
        r = fn()
        r["wall_s"] = round(time.time() - t, 2)
    except Exception as e:  # noqa: BLE001
        r = {"error": f"{type(e).__name__}: {e}"[-2000:], "trace": traceback.format_exc()[-3000:],
             "wall_s": round(time.time() - t, 2)}
        log(f"[{name}] ERROR {r['error']}")
    results[name] = r
    torch.cuda.empty_cache()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True, help="directory for compressor_results.json")
    ap.add_argument("--no-sweep", action="store_true", help="skip the launch-config sweep")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    p = preset("v4-flash")
    specs = {"attention": p.compressor, "indexer": p.indexer.compressor}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
               "default_configs": {k: comp.launch_config(c.dim, c.ratio, c.overlap, c.hadamard)
                                   for k, c in specs.items()}}
    cases = {}

    # 1. correctness at S = 16,384
    for which, c in specs.items():
        def check(c=c, which=which):
            S = 16384
            inp = inputs(1, S, c, 1)
            out = torch.full((1, S // c.ratio, c.dim), float("nan"), dtype=torch.bfloat16, device="cuda")
            t = time.time()
            comp.compress(*inp, **kw(c), out=out)
            torch.cuda.synchronize()
            r = {"first_call_s": round(time.time() - t, 2), "nan_in_out": bool(torch.isnan(out).any())}
            r.update(compare(out, comp_ref.compress(*inp, **kw(c))))
            r["ok"] = r["ok"] and not r["nan_in_out"]
            log(f"[check {which}] ok={r['ok']} differ={r['frac_differ']:.3%} "
                f"err/bound={r['max_err_over_bound']:.3f} nan={r['nan_in_out']}")
            return r
        case(cases, f"check_{which}_S16384", check)

    def check_rope():
        a = p.attention
        N = 2048
        g = torch.Generator(device="cuda").manual_seed(2)
        x = torch.randn(N, a.heads, a.v_dim, device="cuda", generator=g).to(torch.bfloat16)
        pos = torch.arange(100000, 100000 + N, device="cuda")
        r = {}
        for inv in (True, False):
            want = rope_ref.rope_rows_bf16(x, rotary(a.inverse_rope), pos, inverse=inv, heads=True)
            y = x.clone()
            krope.apply_rope_(y, *(t.contiguous() for t in cos_sin(rotary(a.inverse_rope), pos)), 0, inverse=inv)
            r[f"bitwise_inverse={inv}"] = bool(torch.equal(y.view(torch.int16), want.view(torch.int16)))
        r["ok"] = all(r.values())
        log(f"[check rope] {r}")
        return r
    case(cases, "check_rope", check_rope)

    # 2. timing
    def bench(which, S, config=None, check_against=None):
        c = specs[which]
        inp = inputs(1, S, c, 3)
        out = torch.full((1, S // c.ratio, c.dim), float("nan"), dtype=torch.bfloat16, device="cuda")
        comp.compress(*inp, **kw(c), out=out, config=config)
        torch.cuda.synchronize()
        r = {"nan_in_out": bool(torch.isnan(out).any())}
        if check_against is not None:
            r.update(compare(out, check_against))
        fn = lambda: comp.compress(*inp, **kw(c), out=out, config=config)  # noqa: E731
        ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        nbytes = comp_cost.compress_bytes(1, S // c.ratio, c.ratio, c.dim, c.overlap)
        r.update({"ms": ms, "bytes": nbytes, "GBps": nbytes / (ms * 1e-3) / 1e9,
                  "config": config or comp.launch_config(c.dim, c.ratio, c.overlap, c.hadamard)})
        try:  # without the wrapper's Python overhead (matters for the short indexer runs)
            msg = triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
            r.update({"ms_graph": msg, "GBps_graph": nbytes / (msg * 1e-3) / 1e9})
        except Exception as e:  # noqa: BLE001
            r["graph_error"] = f"{type(e).__name__}: {e}"[-500:]
        log(f"[bench {which} S={S} cfg={config}] {ms:.3f} ms  {r['GBps']:.0f} GB/s"
            + (f"  (graph {r['ms_graph']:.3f} ms, {r['GBps_graph']:.0f} GB/s)" if "ms_graph" in r else ""))
        return r, out

    for which in specs:
        for S in (65536, 262144):
            holder = {}

            def run(which=which, S=S, holder=holder):
                r, out = bench(which, S)
                if S == 262144:
                    holder["out"] = out
                return r
            case(cases, f"bench_{which}_S{S}", run)
            if S == 262144 and not args.no_sweep and "out" in holder:
                base = holder.pop("out")
                for br, nw in SWEEP[which]:
                    cfg = {"block_rows": br, "num_warps": nw}
                    case(cases, f"sweep_{which}_S{S}_br{br}_w{nw}",
                         lambda cfg=cfg, which=which, S=S, base=base: bench(which, S, cfg, check_against=base)[0])
                del base

    def bench_rope():
        a = p.attention
        N = 16384
        x = torch.randn(N, a.heads, a.v_dim, device="cuda").to(torch.bfloat16)
        tabs = [t.contiguous() for t in cos_sin(rotary(a.inverse_rope), torch.arange(N, device="cuda"))]
        ms = triton.testing.do_bench(lambda: krope.apply_rope_(x, *tabs, 0), warmup=25, rep=100,
                                     return_mode="median")
        nbytes = rope_cost.rope_bytes(N, a.heads, a.inverse_rope.dim)
        r = {"ms": ms, "bytes": nbytes, "GBps": nbytes / (ms * 1e-3) / 1e9, "N": N, "H": a.heads}
        log(f"[bench rope N={N}] {ms:.3f} ms  {r['GBps']:.0f} GB/s")
        return r
    case(cases, "bench_rope_N16384", bench_rope)

    results["cases"] = cases
    path = os.path.join(args.out, "compressor_results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)

    log(f"\n{results['device']}  torch {results['torch']}  triton {results['triton']}  -> {path}")
    log(f"{'case':44s} {'status':7s} {'ms':>9s} {'GB/s':>7s} {'graph ms':>9s} {'GB/s':>7s} {'differ':>8s} "
        f"{'err/bnd':>8s}")
    for name, r in cases.items():
        if "error" in r:
            status = "ERROR"
        elif r.get("nan_in_out") or r.get("ok") is False:
            status = "FAIL"
        else:
            status = "ok"
        ms = f"{r['ms']:.3f}" if "ms" in r else "-"
        gb = f"{r['GBps']:.0f}" if "GBps" in r else "-"
        fd = f"{r['frac_differ']:.3%}" if "frac_differ" in r else "-"
        eb = f"{r['max_err_over_bound']:.3f}" if "max_err_over_bound" in r else "-"
        gms = f"{r['ms_graph']:.3f}" if "ms_graph" in r else "-"
        ggb = f"{r['GBps_graph']:.0f}" if "GBps_graph" in r else "-"
        log(f"{name:44s} {status:7s} {ms:>9s} {gb:>7s} {gms:>9s} {ggb:>7s} {fd:>8s} {eb:>8s}")


if __name__ == "__main__":
    main()
