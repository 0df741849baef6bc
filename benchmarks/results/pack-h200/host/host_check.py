"""Where a timed forward's milliseconds go outside its kernels: the host preamble before the first launch (an event
recorded when the interpreter starts its walk), the walk, and how long the host takes to issue it all."""
import json, os, sys, time
import torch
from gpu_overlap_check import forward_case
from pipeline import interpreter
case = forward_case("v4-flash 262144", "v4-flash", 262144, [("overlap", True, None), ("one stream", False, None)])
name, spec, S, inputs, runs, _ = case
marks = {}
orig_walk = interpreter._walk
def walk(nodes, env, *a, **k):
    if "walk" not in marks:
        marks["walk"] = torch.cuda.Event(enable_timing=True); marks["walk"].record()
        marks["t_walk"] = time.perf_counter()
    return orig_walk(nodes, env, *a, **k)
interpreter._walk = walk
recs = []
for label, fwd, prog in runs * 3:
    for _ in range(2):
        marks.clear()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter(); e0.record()
        out = fwd.execute(prog, **inputs)
        t1 = time.perf_counter(); e1.record(); e1.synchronize(); t2 = time.perf_counter()
        r = dict(variant=label, gpu_ms=e0.elapsed_time(e1), preamble_gpu_ms=e0.elapsed_time(marks["walk"]),
                 preamble_host_ms=(marks["t_walk"] - t0) * 1e3, host_issue_ms=(t1 - t0) * 1e3, wall_ms=(t2 - t0) * 1e3)
        del out
    recs.append(r)
    print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()})
json.dump(recs, open(os.path.join(sys.argv[1], "host-check.json"), "w"), indent=1)
