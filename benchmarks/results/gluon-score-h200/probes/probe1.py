"""Gluon FP8 score walk against the Triton one: correctness (NaN-poisoned outputs, fp64 reference rows) and time."""
import json, os, sys, time
import torch, triton
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score_gluon as sg
from gpu_score_check import chunk_operands, pack
from gpu_select_check import digest, FORWARDS
from kernels_triton.indexer import kernel as K
from pipeline.stages import indexer as stage
from pipeline.stages.base import Impl

OUT = os.environ.get("OUT", "/tmp")
res = {"correct": [], "chunk": [], "fwd": []}


def ref_rows(q8, qs, w, k8, ks, s_first, ratio, rows):
    qd = q8[rows].double() * qs[rows].double()[..., None]
    kd = k8.double() * ks.double()[:, None]
    sc = torch.einsum("rhd,td->rht", qd, kd).clamp_min(0)
    return (sc * w[rows].double()[..., None]).sum(1)


def check(S, s_first, n, seed):
    ratio, T = 4, S // 4
    q, w, k = chunk_operands(n, T, seed)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    ld = (s_first + n) // ratio + 64
    o_t = torch.full((n, ld), float("nan"), device="cuda")
    o_g = torch.full((n, ld), float("nan"), device="cuda")
    K.score_chunk_fp8(q8, qs, w, k8, ks, o_t, s_first=s_first, ratio=ratio)
    sg.score_chunk_fp8_gluon(q8, qs, w, k8, ks, o_g, s_first=s_first, ratio=ratio)
    torch.cuda.synchronize()
    same_nan = bool(torch.equal(o_t.isnan(), o_g.isnan()))
    same_inf = bool(torch.equal(o_t.isneginf(), o_g.isneginf()))
    fin = o_t.isfinite() & o_g.isfinite()
    d = (o_t - o_g).abs()[fin]
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:8].cuda()
    r = ref_rows(q8, qs, w, k8, ks, s_first, ratio, rows)
    errs = {}
    for name, o in (("triton", o_t), ("gluon", o_g)):
        e = []
        for i, row in enumerate(rows.tolist()):
            L = (s_first + row + 1) // ratio
            if L == 0:
                continue
            x, y = o[row, :L].double(), r[i, :L]
            e.append(float((x - y).norm() / y.norm().clamp_min(1e-30)))
        errs[name] = max(e) if e else 0.0
    rec = dict(S=S, s_first=s_first, n=n, seed=seed, same_nan=same_nan, same_neginf=same_inf,
               bit_equal_frac=float((o_t[fin] == o_g[fin]).float().mean()) if fin.any() else 1.0,
               max_abs_diff=float(d.max()) if d.numel() else 0.0, max_abs=float(o_t[fin].abs().max()) if fin.any() else 0.0,
               ref_rel_err=errs)
    res["correct"].append(rec)
    print(rec, flush=True)


for args in [(262144, 262144 - 2048, 2048, 1), (8192, 1000, 333, 2), (4096, 0, 2048, 3), (262144, 131072 - 2048, 2048, 4),
             (65536, 65536 - 1037, 1037, 5)]:
    check(*args)

# time on the last chunk of 262,144
S, n = 262144, 2048
s_first, ratio, T = S - n, 4, S // 4
q, w, k = chunk_operands(n, T, s_first)
(q8, qs), (k8, ks) = pack(q), pack(k)
out = torch.full((n, (s_first + n) // ratio + 64), float("nan"), device="cuda")
flop = 2 * 64 * 128 * sum((s_first + i + 1) // ratio for i in range(n))
variants = {
    "triton": lambda: K.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio),
    "gluon s3": lambda: sg.score_chunk_fp8_gluon(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, stages=3),
    "gluon s4": lambda: sg.score_chunk_fp8_gluon(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, stages=4),
    "gluon s2": lambda: sg.score_chunk_fp8_gluon(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, stages=2),
    "gluon s3 r224": lambda: sg.score_chunk_fp8_gluon(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, stages=3, maxnreg=224),
}
times = {k: [] for k in variants}
for f in variants.values():
    f()
for rnd in range(3):
    for name, f in variants.items():
        times[name].append(triton.testing.do_bench(f, warmup=20, rep=200, return_mode="median"))
for name, ts in times.items():
    res["chunk"].append({"variant": name, "ms": ts, "tflops": flop / min(ts) / 1e9})
json.dump(res, open(f"{OUT}/probe1.json", "w"), indent=1)

# the forwards with the Gluon walk swapped in (interpreter looks the impl up at run time)
orig = stage.SCORE_FP8.impls["cuda"]
glu = Impl(sg.score_chunk_fp8_or_gluon, "gluon probe")
for mk in FORWARDS[:2]:
    for rnd in range(2):
        for label, impl in (("triton", orig), ("gluon", glu)):
            stage.SCORE_FP8.impls["cuda"] = impl
            try:
                rec = mk()
            except Exception as e:
                rec = {"case": "?", "status": repr(e)[:300]}
            rec["variant"] = label
            rec["round"] = rnd
            res["fwd"].append(rec)
            print(rec, flush=True)
            json.dump(res, open(f"{OUT}/probe1.json", "w"), indent=1)
            torch.cuda.empty_cache()
stage.SCORE_FP8.impls["cuda"] = orig
print("\nchunk (last 2,048 of 262,144):")
for r in res["chunk"]:
    print(f"  {r['variant']:16s} {' '.join(f'{t:.3f}' for t in r['ms'])} ms  {r['tflops']:.0f} TFLOP/s")
for r in res["fwd"]:
    print(f"  {r.get('case')}  {r['variant']}  {r.get('median_ms')}  digest {r.get('digest')}")
