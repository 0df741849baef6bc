"""Where a timed forward's milliseconds go beyond the GPU's span: fwd(**inputs) (validate, plan, execute) against
fwd.execute(program) (a planned program), both by time_ms, and the host's preamble of one call from an idle GPU."""
import dataclasses, json, os, sys, time
import torch
import csa_dsl
from csa_dsl.benchmarks import time_ms
from csa_dsl.compile import compile as compile_pipeline
from pipeline.lang.schedule import Schedule
from pipeline import interpreter

OUT = sys.argv[1]
res = []
v32 = csa_dsl.preset("v3.2")
for name, spec, S in (("v3.2 fp8_mma", v32.replace(indexer=dataclasses.replace(v32.indexer, fp8_mma=True)), 131072),
                      ("v4-flash", csa_dsl.preset("v4-flash"), 262144)):
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
    fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed"))
    prog = fwd.plan(S)
    fwd(**inp); torch.cuda.synchronize()
    t0 = time.perf_counter(); prog2 = fwd.plan(S); t_plan = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter(); csa_dsl.compile  # noqa
    from pipeline.inputs import validate_inputs
    t0 = time.perf_counter(); validate_inputs(spec, inp, device=fwd.device); t_val = (time.perf_counter() - t0) * 1e3
    # one call from an idle GPU: host ms until it returns (the launches), then the GPU tail
    torch.cuda.synchronize()
    t0 = time.perf_counter(); o = fwd(**inp); t_ret = (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize(); t_all = (time.perf_counter() - t0) * 1e3
    del o
    a = [time_ms(lambda: fwd(**inp)) for _ in range(2)]
    b = [time_ms(lambda: fwd.execute(prog, **inp)) for _ in range(2)]
    rec = {"case": name, "plan_ms": t_plan, "validate_ms": t_val, "one_call_host_return_ms": t_ret,
           "one_call_wall_ms": t_all, "fwd_call_ms": a, "execute_planned_ms": b}
    res.append(rec)
    print(rec, flush=True)
    del inp, fwd, prog, prog2
    torch.cuda.empty_cache()
json.dump(res, open(os.path.join(OUT, "host-probe.json"), "w"), indent=1)
