"""v3.2 composed at 131,072: the query chunk (Schedule.query_chunk) 2,048 (the planner's) against 1,024 and 4,096."""
import dataclasses, json, os, sys
import torch
import csa_dsl
from csa_dsl.benchmarks import time_ms, peak_above
from pipeline import planner
from pipeline.lang.schedule import Schedule
OUT = sys.argv[1]
res = []
base = csa_dsl.preset("v3.2")
S = 131072
inp = csa_dsl.random_inputs(base, 1, S, "cuda", seed=S)
ob = planner.output_bytes(base, 1, S)
for fp8 in (True, False):
    sp = base.replace(indexer=dataclasses.replace(base.indexer, fp8_mma=True)) if fp8 else base
    fwds = {c: csa_dsl.compile(sp, "cuda", schedule=Schedule(query_chunk=c)) for c in (2048, 4096, 1024)}
    outs, t, pk = {}, {c: [] for c in fwds}, {}
    for c, f in fwds.items():
        outs[c] = f(**inp); pk[c] = peak_above(lambda: f(**inp), ob)
    for _ in range(3):
        for c, f in fwds.items():
            t[c].append(time_ms(lambda: f(**inp)))
    same = {c: bool(torch.equal(outs[c], outs[2048])) for c in fwds}
    r = dict(case=f"v3.2 {'fp8_mma' if fp8 else 'exact'} {S}", times=t, peak_gib=pk, same_as_2048=same,
             plan_chunk=fwds[2048].plan(S).query_chunk if hasattr(fwds[2048].plan(S), "query_chunk") else None)
    res.append(r); print(r, flush=True)
    json.dump(res, open(os.path.join(OUT, "chunk-ab.json"), "w"), indent=1)
    del fwds, outs; torch.cuda.empty_cache()
