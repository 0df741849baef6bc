"""GPU probe: V4's Gluon score walk with its CTA's queries shared out as 2 consumers x 4 queries (N = 256, the
tree's), 3 x 2 or 4 x 2 (N = 128): bits of scores and group maxima on several shapes, then times of the score alone
and of the forwards, alternating in one process."""
import functools, json, os, sys, time
import torch, triton
from gpu_score_check import chunk_operands, pack
from gpu_select_check import digest
from gpu_overlap_check import forward_case, indexer_case, output_of
from gpu_select_check import DEFAULT
from csa_dsl.benchmarks import time_ms
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer import score_gluon as SG
from kernels_triton.indexer.cost import select_capacity

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
res = {"commit": os.environ.get("CSA_COMMIT"), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
       "triton": triton.__version__, "checks": [], "times": [], "forwards": []}
orig = SG.score_chunk_fp8_gluon
def staged(walk, stages):
    def call(*a, **k):
        old = SG.GLUON_STAGES
        SG.GLUON_STAGES = stages
        try:
            return orig(*a, walk=walk, **k)
        finally:
            SG.GLUON_STAGES = old
    return call
VARIANTS = {"2x4": functools.partial(orig, walk=SG.WALK_2X4), "4x2": functools.partial(orig, walk=SG.WALK_4X2),
            "4x2s2": staged(SG.WALK_4X2, 2), "4x2s4": staged(SG.WALK_4X2, 4)}
FWD_VARIANTS = ("2x4", "4x2")
def use(v):
    K.score_chunk_fp8_gluon = VARIANTS[v]
bits = lambda x: x.view(torch.int32)
def dump():
    json.dump(res, open(os.path.join(out_dir, "wg-probe.json"), "w"), indent=1)

for (n, s_first, T, topk) in [(2048, 262144 - 2048, 65536, 512), (2045, 9000, 3000, 512), (37, 50000, 13000, 1024),
                              (2048, 129024, 65536, 1024), (3, 0, 8, 512), (100, 3000, 800, 512), (13, 1, 64, 512)]:
    cap = select_capacity(topk)
    torch.manual_seed(n)
    q, w, k = chunk_operands(n, T, 77 + n + topk)
    k[min(5, T - 1)] = float("nan"); q[min(3, n - 1), 7, 2] = float("nan")
    (q8, qs), (k8, ks) = pack(q), pack(k)
    a = (q8, qs, w, k8, ks)
    ld = (s_first + n) // 4 + 64
    outs = {}
    for v in VARIANTS:
        for gmx in (False, True):
            o = torch.full((n, ld), float("nan"), device="cuda")
            gm = torch.full((n, cap), float("nan"), device="cuda") if gmx else None
            use(v)
            K.score_chunk_fp8(*a, o, s_first=s_first, ratio=4, gmax=gm)
            torch.cuda.synchronize()
            outs[(v, gmx)] = (o, gm)
    ref_o = outs[("2x4", True)][0]
    rec = {"n": n, "s_first": s_first, "T": T, "topk": topk,
           "scores_equal": all(torch.equal(bits(o), bits(ref_o)) for (o, _) in outs.values()),
           "gmax_equal": all(torch.equal(bits(outs[(v, True)][1]), bits(outs[("2x4", True)][1])) for v in VARIANTS),
           "nan_left": int(torch.isnan(ref_o[:, :(s_first + n) // 4]).sum())}
    res["checks"].append(rec); print("check", rec, flush=True); dump()

for s_first in (262144 - 2048, 129024):
    n, T, cap = 2048, 65536, select_capacity(512)
    q, w, k = chunk_operands(n, T, s_first)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    a = (q8, qs, w, k8, ks)
    o = torch.full((n, (s_first + n) // 4 + 64), float("nan"), device="cuda")
    gm = torch.empty((n, cap), device="cuda")
    flop = 2 * 64 * 128 * sum((s_first + i + 1) // 4 for i in range(n))
    for rnd in range(3):
        for v in VARIANTS:
            for gmx in (False, True):
                use(v)
                fn = lambda: K.score_chunk_fp8(*a, o, s_first=s_first, ratio=4, gmax=gm if gmx else None)
                ms = triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")
                res["times"].append({"s_first": s_first, "variant": v, "gmax": gmx, "round": rnd, "ms": ms,
                                     "tflops": flop / ms / 1e9})
                print("time", s_first, v, gmx, rnd, round(ms, 4), round(flop / ms / 1e9), flush=True)
    dump()

for mk in (lambda: forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT), lambda: indexer_case("v4-flash", 262144, DEFAULT)):
    case = mk()
    name, spec, S, inputs, runs, _ = case
    _, fwd, prog = runs[0]
    call = output_of(fwd, prog, inputs)
    for rnd in range(2):
        for v in FWD_VARIANTS:
            use(v)
            d = digest(call())
            t = time_ms(call)
            res["forwards"].append({"case": name, "variant": v, "round": rnd, "digest": d, "median_ms": t})
            print("fwd", name, v, rnd, round(t, 2), d, flush=True)
            dump()
    del case, inputs, runs, call, fwd, prog
    torch.cuda.empty_cache()
use("2x4")
print("SUMMARY")
for r in res["checks"]: print(r)
import statistics
for s_first in (262144 - 2048, 129024):
    for v in VARIANTS:
        for gmx in (False, True):
            xs = [t["ms"] for t in res["times"] if t["s_first"] == s_first and t["variant"] == v and t["gmax"] == gmx]
            print(f"score {s_first} {v:7} gmax={gmx}: " + ", ".join(f"{x:.3f}" for x in xs))
for r in res["forwards"]: print(f"{r['case']:30} {r['variant']:7} {r['median_ms']:.2f} {r['digest']}")
