"""Kernel-by-kernel GPU time: packed 4x65536 vs 4 x own 65536 (v4-flash default schedule), torch profiler."""
import collections, json, sys
import torch
from torch.profiler import profile, ProfilerActivity
from gpu_select_check import DEFAULT
from gpu_overlap_check import forward_case

def prof(case, reps=3):
    name, spec, S, inputs, runs, _ = case
    _, fwd, prog = runs[0]
    print(name, {k: v for k, v in prog.consts.items()} if hasattr(prog, "consts") else "", flush=True)
    for _ in range(3):
        fwd.execute(prog, **inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(reps):
            fwd.execute(prog, **inputs)
        torch.cuda.synchronize()
    agg = collections.defaultdict(lambda: [0.0, 0])
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name[:60]][0] += e.device_time_total / 1e3 / reps
            agg[e.name[:60]][1] += 1
    from csa_dsl.benchmarks import time_ms
    ms = [time_ms(lambda: fwd.execute(prog, **inputs)) for _ in range(2)]
    print(name, "wall ms", ms, flush=True)
    return {k: (v[0], v[1] // reps) for k, v in agg.items()}

V = DEFAULT if sys.argv[3] == "on" else [("no-overlap", False, None)]
packed = prof(forward_case("packed", "v4-flash", 262144, V, lengths=[65536] * 4))
own = prof(forward_case("own", "v4-flash", 65536, V))
json.dump({"packed": packed, "own": own}, open(sys.argv[1] + f"/packed-prof-{sys.argv[2]}-{sys.argv[3]}.json", "w"), indent=1)
rows = sorted(set(packed) | set(own), key=lambda k: -max(packed.get(k, (0, 0))[0], 4 * own.get(k, (0, 0))[0]))
print(f"{'kernel':<60} {'packed':>9} {'4xown':>9} {'diff':>8} {'n_p':>5} {'4n_o':>5}")
tp = to = 0
for k in rows:
    a, na = packed.get(k, (0, 0)); b, nb = own.get(k, (0, 0))
    tp += a; to += 4 * b
    print(f"{k:<60} {a:9.3f} {4*b:9.3f} {a-4*b:8.3f} {na:5d} {4*nb:5d}")
print(f"{'total':<60} {tp:9.3f} {to:9.3f} {tp-to:8.3f}")
