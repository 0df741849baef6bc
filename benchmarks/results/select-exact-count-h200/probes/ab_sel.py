"""A/B of the selection's launch shape: run once per tree (PYTHONPATH at the tree), alternating trees.
python ab_sel.py OUT TAG -> OUT/ab-sel-TAG-<i>.json"""
import dataclasses, json, os, sys, time
import torch, triton
import csa_dsl
from pipeline import planner
from csa_dsl.benchmarks import base_record, time_ms
from gpu_select_check import digest
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer.cost import select_capacity

OUT, TAG = sys.argv[1], sys.argv[2]
print("kernel from", K.__file__, flush=True)
res = []

def sel_case(S, ratio, topk, s_first, n=2048):
    T = S // ratio
    q, w, k = chunk_operands(n, T, s_first + topk)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    out = torch.full((n, T + 64), float("nan"), device="cuda")
    gmax = torch.empty(n, select_capacity(topk), device="cuda")
    K.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, gmax=gmax)
    keys = torch.full((n, topk), -7, dtype=torch.int32, device="cuda")
    fn = lambda: K.select_chunk(out, keys, s_first=s_first, ratio=ratio, k_eff=topk, topk=topk, gmax=gmax)
    fn()
    res.append({"case": f"select top-{topk} {n} rows from {s_first} of S={S} ratio {ratio}", "digest": digest(keys),
                "median_ms": triton.testing.do_bench(fn, warmup=20, rep=300, return_mode="median")})
    print(res[-1], flush=True)

if not os.environ.get("AB_CASES"):
    sel_case(131072, 1, 2048, 131072 - 2048)
    sel_case(131072, 1, 2048, 65536)
    sel_case(262144, 4, 1024, 262144 - 2048)
    sel_case(262144, 4, 512, 262144 - 2048)
    if os.environ.get("EARLY") == "1":
        sel_case(131072, 1, 2048, 8192)
        sel_case(262144, 4, 512, 16384)
        sel_case(262144, 4, 1024, 16384)
torch.cuda.empty_cache()

from csa_dsl.compile import compile as compile_pipeline
from pipeline.lang.schedule import Schedule

def fwd_case(label, spec, S, overlap):
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
    out_bytes = planner.output_bytes(spec, 1, S)
    fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", overlap=overlap))
    o = fwd(**inp)
    d = digest(o)
    del o
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    o = fwd(**inp)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base - out_bytes) / 2**30
    del o
    ts = [time_ms(lambda: fwd(**inp)) for _ in range(2)]
    res.append({"case": f"{label} composed {S}" + ("" if overlap else " one stream"), "digest": d, "times": ts,
                "median_ms": min(ts), "peak_above_gib": peak})
    print(res[-1], flush=True)
    del inp, fwd
    torch.cuda.empty_cache()

spec = csa_dsl.preset("v3.2")
fp8 = spec.replace(indexer=dataclasses.replace(spec.indexer, fp8_mma=True))
LIGHT = os.environ.get("AB_LIGHT") == "1"
ONLY = os.environ.get("AB_CASES", "").split(",")
if os.environ.get("SEL_ONLY") == "1":
    pass
elif ONLY != [""]:
    for c in ONLY:
        {"v32fp8": lambda: fwd_case("v3.2 fp8_mma", fp8, 131072, True),
         "v32": lambda: fwd_case("v3.2", spec, 131072, True),
         "v4flash": lambda: fwd_case("v4-flash", csa_dsl.preset("v4-flash"), 262144, True)}[c]()
else:
    for overlap in ((True,) if LIGHT else (True, False)):
        fwd_case("v3.2 fp8_mma", fp8, 131072, overlap)
        if not LIGHT:
            fwd_case("v3.2", spec, 131072, overlap)
    if not LIGHT:
        fwd_case("v4-pro", csa_dsl.preset("v4-pro"), 262144, True)
    fwd_case("v4-flash", csa_dsl.preset("v4-flash"), 262144, True)
S = 131072
rec = dict(base_record("ab-select", spec, 1, S, "composed"), tree=TAG, results=res)
i = 0
while os.path.exists(os.path.join(OUT, f"ab-sel-{TAG}-{i}.json")):
    i += 1
json.dump(rec, open(os.path.join(OUT, f"ab-sel-{TAG}-{i}.json"), "w"), indent=1)
for r in res:
    print(f"{TAG:<5} {r['case']:<55} {r['median_ms']:9.3f} ms  {r['digest']}")
