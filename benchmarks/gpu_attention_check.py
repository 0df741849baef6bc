#!/usr/bin/env python
"""Compile, check and time the TileLang sparse MLA forward kernels on a Hopper GPU.

    python benchmarks/gpu_attention_check.py --out DIR [--variants ws,pipelined]
                                             [--shapes v3.2,v4-flash,v4-pro] [--no-resources]

For each variant ("ws", "pipelined") and preset:
  * compile time (both variants compile in parallel processes first, filling TileLang's
    kernel cache; registers / spills / shared memory from ptxas come from the same pass)
  * correctness of the timed configuration against a float64 gather reference, on a sample
    of queries (relative norm error of out; target <= 1e-2)
  * median time with triton.testing.do_bench, rotating 3 input sets; TFLOP/s counted as
    2*H*(D+dv) per valid (query, key) pair ("valid") and per index slot ("slots")
Each (variant, shape) runs in a child process with a time limit, so a hang or a CUDA fault
in one variant is reported and does not hide the other. Everything goes to DIR/results.json
and a table ends the output. Total runtime is about 2-3 minutes.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

V32_SCALE = 192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2
# name: heads, dim_qk, dim_v, num_indices, sink, Sq, R, window, scale
PRESETS = {
    "v3.2": dict(H=128, D=576, DV=512, NI=2048, sink=False, Sq=4096, R=32768, window=0,
                 scale=V32_SCALE),
    "v4-flash": dict(H=64, D=512, DV=512, NI=640, sink=True, Sq=8192, R=8192 + 2048,
                     window=128, scale=512 ** -0.5),
    "v4-pro": dict(H=128, D=512, DV=512, NI=1152, sink=True, Sq=8192, R=8192 + 2048,
                   window=128, scale=512 ** -0.5),
}
TARGETS = {"v3.2": 500, "v4-flash": 350, "v4-pro": 450}
N_SETS = 3
CHECK_QUERIES = 48
RUN_TIMEOUT_S = 75


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------- inputs / ref
def make_indices(p, gen, device):
    """Realistic index lists. v3.2: queries are the last Sq positions of an R-token context,
    top-NI of the causally visible rows. V4: window of 128 raw tokens (-1 before 0), then the
    top-(NI-128) of the causally visible compressed rows (t < (s+1)//4), offset by Sq."""
    import torch

    Sq, R, NI, W = p["Sq"], p["R"], p["NI"], p["window"]
    s = torch.arange(Sq, device=device)
    if W == 0:
        pos = R - Sq + s
        score = torch.rand(Sq, R, generator=gen, device=device)
        score = score.masked_fill(torch.arange(R, device=device)[None, :] > pos[:, None], -1.0)
        top = score.topk(NI, dim=1)
        return torch.where(top.values >= 0, top.indices, -1).to(torch.int32)
    T = R - Sq
    win = s[:, None] - (W - 1) + torch.arange(W, device=device)[None, :]
    win = torch.where(win >= 0, win, -1)
    K = NI - W
    score = torch.rand(Sq, T, generator=gen, device=device)
    vis = torch.arange(T, device=device)[None, :] < ((s + 1) // 4)[:, None]
    score = score.masked_fill(~vis, -1.0)
    top = score.topk(K, dim=1)
    cmp = torch.where(top.values >= 0, top.indices + Sq, -1)
    return torch.cat([win, cmp], dim=1).to(torch.int32).contiguous()


def make_set(p, seed, device="cuda"):
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    q = (torch.randn(1, p["Sq"], p["H"], p["D"], generator=gen, device=device) * 0.5)
    kv = (torch.randn(1, p["R"], p["D"], generator=gen, device=device) * 0.5)
    idx = make_indices(p, gen, device)[None].contiguous()
    sink = (torch.randn(p["H"], generator=gen, device=device) * 2).float() if p["sink"] else None
    return q.to(torch.bfloat16), kv.to(torch.bfloat16), idx, sink


def ref_rows(q, kv, idx, scale, dv, sink):
    """float64 gather reference for a few queries: q [n,H,D], idx [n,NI] -> out [n,H,dv]."""
    import torch

    R = kv.shape[0]
    valid = (idx >= 0) & (idx < R)
    rows = kv[idx.clamp(0, R - 1).long()].double()              # [n, NI, D]
    logits = torch.einsum("nhd,nkd->nhk", q.double(), rows) * scale
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    if sink is not None:
        logits = torch.cat([logits, sink.double()[None, :, None].expand(q.shape[0], -1, 1)], -1)
    m = logits.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(logits - m)
    den = p.sum(-1, keepdim=True)
    o = torch.einsum("nhk,nkd->nhd", p[..., : idx.shape[1]], rows[..., :dv])
    return torch.where(den > 0, o / den.clamp_min(1e-300), torch.zeros_like(o))


# ---------------------------------------------------------------------------- workers
def compile_job(job):
    """Child process: compile one (variant, shape) class, save its CUDA source, and get
    registers / spills / shared memory from ptxas. Fills TileLang's disk kernel cache."""
    variant, name, out_dir, resources = job
    from kernels_tilelang.sparse_mla import ir as sm_ir
    from kernels_tilelang.sparse_mla import kernel as sm

    p = PRESETS[name]
    r = {}
    t = time.time()
    try:
        k = sm.get_kernel(p["H"], p["D"], p["DV"], p["NI"], p["sink"], False, variant)
        r["compile_s"] = round(time.time() - t, 2)
        with open(os.path.join(out_dir, f"{variant}_{name}.cu"), "w") as f:
            f.write(k.get_kernel_source())
    except Exception as e:  # noqa: BLE001
        r["compile_s"] = round(time.time() - t, 2)
        r["compile_error"] = f"{type(e).__name__}: {e}"[-3000:]
        return variant, name, r
    if resources:
        try:
            rr = sm_ir.kernel_resources(p["H"], p["D"], p["DV"], p["NI"], p["sink"], False, variant)
            rr.pop("ptxas", None)
            rr.pop("cuobjdump", None)
            r["resources"] = rr
        except Exception as e:  # noqa: BLE001
            r["resources"] = {"errors": [f"{type(e).__name__}: {e}"[-1000:]]}
    return variant, name, r


def worker_run(variant, name):
    import torch
    import triton

    from kernels_tilelang.sparse_mla.kernel import sparse_mla_fwd

    p = PRESETS[name]
    r = {}
    t = time.time()
    sets = [make_set(p, 1234 + i) for i in range(N_SETS)]
    valid = [int((s[2] >= 0).sum().item()) for s in sets]
    r["valid_pairs_per_set"] = valid
    r["slots"] = p["Sq"] * p["NI"]
    r["inputs_s"] = round(time.time() - t, 2)

    # correctness on the timed configuration, sampled queries (incl. the first and last)
    q, kv, idx, sink = sets[0]
    t = time.time()
    out = sparse_mla_fwd(q, kv, idx, p["scale"], p["DV"], sink=sink, variant=variant)
    torch.cuda.synchronize()
    r["first_call_s"] = round(time.time() - t, 2)
    r["nan_in_out"] = bool(torch.isnan(out).any().item())
    sel = torch.linspace(0, p["Sq"] - 1, CHECK_QUERIES, device="cuda").round().long().unique()
    ref = ref_rows(q[0, sel], kv[0], idx[0, sel], p["scale"], p["DV"], sink)
    got = out[0, sel].double()
    r["rel_err"] = float(((got - ref).norm() / ref.norm().clamp_min(1e-30)).item())
    r["ok"] = (r["rel_err"] <= 1e-2) and not r["nan_in_out"]
    log(f"[{variant}] {name}: rel err {r['rel_err']:.2e}  nan={r['nan_in_out']}  "
        f"({'OK' if r['ok'] else 'FAIL'})")

    state = {"i": 0}

    def fn():
        i = state["i"] % N_SETS
        state["i"] += 1
        qq, kk, ii, ss = sets[i]
        sparse_mla_fwd(qq, kk, ii, p["scale"], p["DV"], sink=ss, variant=variant)

    ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    r["ms"] = float(ms)
    flop_per_pair = 2 * p["H"] * (p["D"] + p["DV"])
    r["tflops_valid"] = flop_per_pair * (sum(valid) / N_SETS) / (ms * 1e-3) / 1e12
    r["tflops_slots"] = flop_per_pair * r["slots"] / (ms * 1e-3) / 1e12
    r["target_tflops"] = TARGETS[name]
    log(f"[{variant}] {name}: {ms:.3f} ms  {r['tflops_valid']:.0f} TFLOP/s (valid pairs), "
        f"{r['tflops_slots']:.0f} TFLOP/s (all slots); target {TARGETS[name]}")
    return r


def _fmt_res(rr):
    if not rr:
        return "n/a"
    return (f"regs={rr.get('regs')} spill_st={rr.get('spill_stores_bytes')} "
            f"spill_ld={rr.get('spill_loads_bytes')} smem/CTA={rr.get('smem_per_cta_bytes')}")


def _child(args_list, timeout):
    """Run this script as a child; returns (rc, parsed JSON result or None, tail of output)."""
    cmd = [sys.executable, os.path.abspath(__file__), *args_list]
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc, text = "timeout", out + err
    for line in text.splitlines():
        if not line.startswith("@@RESULT "):
            log("   " + line)
    res = None
    for line in text.splitlines():
        if line.startswith("@@RESULT "):
            res = json.loads(line[len("@@RESULT "):])
    return rc, res, text[-4000:], round(time.time() - t, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for results.json and sources")
    ap.add_argument("--variants", default="ws,pipelined")
    ap.add_argument("--shapes", default="v3.2,v4-flash,v4-pro")
    ap.add_argument("--no-resources", action="store_true", help="skip the ptxas -v recompile")
    ap.add_argument("--worker", choices=["run"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    shapes = [s for s in a.shapes.split(",") if s]
    variants = [v for v in a.variants.split(",") if v]

    if a.worker:
        try:
            res = worker_run(a.variant, a.shape)
        except Exception as e:  # noqa: BLE001
            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            log(res["traceback"])
        print("@@RESULT " + json.dumps(res), flush=True)
        return

    t0 = time.time()
    info = {"argv": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import tilelang
        import torch

        info.update(torch=torch.__version__, tilelang=getattr(tilelang, "__version__", "?"),
                    device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    capability=list(torch.cuda.get_device_capability(0))
                    if torch.cuda.is_available() else None)
    except Exception as e:  # noqa: BLE001
        info["env_error"] = repr(e)
    log(f"environment: {info}")
    results = {"info": info, "variants": {v: {s: {} for s in shapes} for v in variants}}

    # phase 1: compile every (variant, shape) class in parallel processes (fills the cache)
    log("== compile ==")
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as FutTimeout

    jobs = [(v, s, a.out, not a.no_resources) for v in variants for s in shapes]
    ex = ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn"))
    futs = {ex.submit(compile_job, j): j for j in jobs}
    deadline = time.time() + 240
    for fut, j in futs.items():
        v, s = j[0], j[1]
        try:
            _, _, r = fut.result(timeout=max(1.0, deadline - time.time()))
        except FutTimeout:
            r = {"compile_error": "compile timed out (240 s)"}
        except Exception as e:  # noqa: BLE001  (a crashed worker process)
            r = {"compile_error": f"{type(e).__name__}: {e}"}
        results["variants"][v][s].update(r)
        log(f"[{v}] {s}: compiled in {r.get('compile_s')} s"
            + (f"  ERROR {r['compile_error'][:400]}" if "compile_error" in r else "")
            + (f"  resources {_fmt_res(r.get('resources'))}" if r.get("resources") else ""))
    ex.shutdown(wait=False, cancel_futures=True)
    log(f"compile phase done at {time.time() - t0:.0f} s")

    # phase 2: one child per (variant, shape), sequential on the GPU, with a time limit
    log("== check + time ==")
    for v in variants:
        hung = None
        for s in shapes:
            slot = results["variants"][v][s]
            if slot.get("compile_error"):
                slot["run_error"] = "not run: compile failed"
                continue
            if hung:  # a deadlock is rarely shape-specific; keep the total under 4 minutes
                slot["run_error"] = f"skipped: {v} hung on {hung}"
                continue
            rc, res, tail, dt = _child(["--out", a.out, "--worker", "run", "--variant", v,
                                        "--shape", s], timeout=RUN_TIMEOUT_S)
            slot["run_wall_s"] = dt
            if res is None or rc == "timeout":
                slot["run_error"] = (f"timed out after {RUN_TIMEOUT_S} s (hang?)"
                                     if rc == "timeout" else f"child died rc={rc} (crash)")
                slot["run_tail"] = tail
                if rc == "timeout":
                    hung = s
                log(f"[{v}] {s}: FAILED {slot['run_error']}")
            else:
                slot.update(res)
                if "error" in res:
                    slot["run_error"] = res["error"]
            with open(os.path.join(a.out, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
    results["total_s"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    # summary table
    log("")
    hdr = (f"{'variant':<10} {'shape':<9} {'compile s':>9} {'rel err':>9} {'ms':>8} "
           f"{'TFLOP/s':>8} {'(slots)':>8} {'target':>6} {'regs':>5} {'spill':>6} {'smem KiB':>8}  status")
    log(hdr)
    log("-" * len(hdr))
    for v in variants:
        for s in shapes:
            r = results["variants"][v][s]
            rr = r.get("resources") or {}
            smem = rr.get("smem_per_cta_bytes") or rr.get("dyn_smem_bytes")
            status = ("compile error" if r.get("compile_error") else r.get("run_error")
                      or ("OK" if r.get("ok") else "WRONG"))
            log(f"{v:<10} {s:<9} {r.get('compile_s', float('nan')):>9} "
                f"{r.get('rel_err', float('nan')):>9.2e} {r.get('ms', float('nan')):>8.3f} "
                f"{r.get('tflops_valid', float('nan')):>8.0f} "
                f"{r.get('tflops_slots', float('nan')):>8.0f} {TARGETS[s]:>6} "
                f"{str(rr.get('regs')):>5} {str(rr.get('spill_stores_bytes')):>6} "
                f"{(smem / 1024 if smem else float('nan')):>8.1f}  {str(status)[:60]}")
    log(f"\nresults: {os.path.join(a.out, 'results.json')}  (total {results['total_s']} s)")


if __name__ == "__main__":
    main()
