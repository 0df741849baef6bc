"""A/B of the attention kernel: run once per tree (PYTHONPATH at the tree), alternating trees.
python ab_attn.py OUT TAG -> OUT/ab-attn-TAG-<i>.json"""
import dataclasses, json, os, sys
import torch
import csa_dsl
from pipeline import planner
from csa_dsl.benchmarks import base_record, time_ms
from gpu_select_check import digest
from gpu_attention_ab import attention_alone
from kernels_tilelang.sparse_mla import kernel as SM

OUT, TAG = sys.argv[1], sys.argv[2]
print("kernel from", SM.__file__, flush=True)
res = []
CASES = os.environ.get("AB_CASES", "a4flash,a32,v4flash,v32fp8").split(",")

from csa_dsl.compile import compile as compile_pipeline
from pipeline.lang.schedule import Schedule

def fwd_case(label, spec, S):
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
    out_bytes = planner.output_bytes(spec, 1, S)
    fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", overlap=True))
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
    res.append({"case": f"{label} composed {S}", "digest": d, "times": ts, "median_ms": min(ts), "peak_above_gib": peak})
    print(res[-1], flush=True)
    del inp, fwd
    torch.cuda.empty_cache()

spec32 = csa_dsl.preset("v3.2")
fp8 = spec32.replace(indexer=dataclasses.replace(spec32.indexer, fp8_mma=True))
for c in CASES:
    if c == "a4flash":
        res.append(attention_alone("v4-flash"))
    elif c == "a4pro":
        res.append(attention_alone("v4-pro"))
    elif c == "a32":
        res.append(attention_alone("v3.2", n=16384))
    elif c == "v4flash":
        fwd_case("v4-flash", csa_dsl.preset("v4-flash"), 262144)
    elif c == "v32fp8":
        fwd_case("v3.2 fp8_mma", fp8, 131072)
    elif c == "v4pro":
        fwd_case("v4-pro", csa_dsl.preset("v4-pro"), 262144)
    print(res[-1], flush=True)
    torch.cuda.empty_cache()
rec = dict(base_record("ab-attention", spec32, 1, 131072, "composed"), tree=TAG, results=res)
i = 0
while os.path.exists(os.path.join(OUT, f"ab-attn-{TAG}-{i}.json")):
    i += 1
json.dump(rec, open(os.path.join(OUT, f"ab-attn-{TAG}-{i}.json"), "w"), indent=1)
for r in res:
    extra = f"  {r['tflops']:.0f} TFLOP/s" if "tflops" in r else ""
    print(f"{TAG:<5} {r['case']:<45} {r['median_ms']:9.3f} ms{extra}  {r['digest']}")
