"""bench_varlen (the library's packed-vs-own benchmark) with more rounds, on the tree first on PYTHONPATH."""
import json, sys
import kernels_triton
from csa_dsl.benchmarks import bench_varlen
from pipeline.lang.presets import preset
recs = bench_varlen(preset("v4-flash"), [65536] * 4, rounds=int(sys.argv[3]), progress=False)
json.dump(recs, open(f"{sys.argv[1]}/varlen-rounds-{sys.argv[2]}.json", "w"), indent=1)
r = recs[0]
print(sys.argv[2], kernels_triton.__file__, "packed", round(r["median_ms"], 2), "own", round(r["own_runs_ms"], 2),
      "packed/own", round(r["packed_over_own"], 4), "rounds", [round(x, 3) for x in r["round_ratios"]])
