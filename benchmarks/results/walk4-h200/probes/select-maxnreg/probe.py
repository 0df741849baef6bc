"""GPU probe: the selection's pass 2 with 2 or 4 tiles loaded a step (kernel.SELECT_STEP_TILES), alternating in
one process: the selection alone (top-512/1,024/2,048, last chunk) and v4-flash composed / indexer, v3.2 composed,
with the digest of every output."""
import json, os, sys
import torch
from gpu_select_check import select_alone, digest, DEFAULT
from gpu_overlap_check import forward_case, indexer_case, output_of
from csa_dsl.benchmarks import time_ms
from kernels_triton.indexer import kernel as K

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
res = {"commit": os.environ.get("CSA_COMMIT"), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
       "alone": [], "forwards": []}
dump = lambda: json.dump(res, open(os.path.join(out_dir, "sel-probe.json"), "w"), indent=1)
VARS = {2: (2, {}), 4: (4, {}), 456: (4, {1024: 56})}
def use(v):
    K.SELECT_STEP_TILES, K.SELECT_MAXNREG = VARS[v]
for rnd in range(3):
    for step in VARS:
        use(step)
        for topk in (512, 1024):
            r = select_alone(topk)
            r.update(step=step, round=rnd)
            res["alone"].append(r); print("alone", step, rnd, topk, round(r["median_ms"], 4), r["digest"], flush=True)
dump()
cases = [lambda: forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT), lambda: indexer_case("v4-flash", 262144, DEFAULT),
]
for mk in cases:
    name, spec, S, inputs, runs, _ = mk()
    _, fwd, prog = runs[0]
    call = output_of(fwd, prog, inputs)
    for rnd in range(2):
        for step in (4, 456):
            use(step)
            d = digest(call()); t = time_ms(call)
            res["forwards"].append({"case": name, "step": step, "round": rnd, "digest": d, "median_ms": t})
            print("fwd", name, step, rnd, round(t, 2), d, flush=True); dump()
    del inputs, runs, call, fwd, prog
    torch.cuda.empty_cache()
print("SUMMARY")
for topk in (512, 1024):
    for step in VARS:
        xs = [r for r in res["alone"] if r["step"] == step and r["case"].startswith(f"select alone, top-{topk},")]
        print(f"alone top-{topk} step {step}: " + ", ".join(f"{r['median_ms']:.4f}" for r in xs), {r["digest"] for r in xs})
for r in res["forwards"]: print(f"{r['case']:30} step {r['step']} {r['median_ms']:.2f} {r['digest']}")
