"""v3.2 --fp8-mma composed at 131,072 with query chunks of 2,048 and 4,096, alternating, one process."""
import dataclasses, json, os, sys
import torch
import csa_dsl
from pipeline import planner
from csa_dsl.benchmarks import base_record, time_ms
from csa_dsl.compile import compile as compile_pipeline
from pipeline.lang.schedule import Schedule
from gpu_select_check import digest

OUT = sys.argv[1]
spec = csa_dsl.preset("v3.2")
spec = spec.replace(indexer=dataclasses.replace(spec.indexer, fp8_mma=True))
S = 131072
inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
out_bytes = planner.output_bytes(spec, 1, S)
fwds = {c: compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", query_chunk=c))
        for c in (2048, 4096)}
res = []
for rnd in range(2):
    for c, fwd in fwds.items():
        o = fwd(**inp); d = digest(o); del o
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        o = fwd(**inp); torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base - out_bytes) / 2**30
        del o
        ts = [time_ms(lambda: fwd(**inp)) for _ in range(2)]
        res.append({"chunk": c, "round": rnd, "digest": d, "times": ts, "peak_above_gib": peak})
        print(res[-1], flush=True)
json.dump(dict(base_record("v3.2-chunk-probe", spec, 1, S, "composed"), results=res),
          open(os.path.join(OUT, "v32-chunk-probe.json"), "w"), indent=1)
