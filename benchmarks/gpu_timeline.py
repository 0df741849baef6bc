"""Where a forward's milliseconds go on the GPU's own clock (csa_dsl.timeline: the kernels of one warm call
from a CUDA trace, by stage, and the time each set of stages runs at once):

    python benchmarks/gpu_timeline.py OUT_DIR [CASE ...]

CASE: v4-flash (composed, 262,144, the default schedule), v4-flash-one-stream (the same without the score
overlap), indexer (v4-flash's standalone indexer at 262,144), hca (v4-flash-hca, 262,144), v3.2-one-stream
(v3.2 composed at 131,072 without the score overlap), v3.2-fp8-mma and v3.2-fp8-mma-one-stream (the same with
`--fp8-mma`, with and without the overlap). Default: all seven.
Writes OUT_DIR/timeline-CASE.json and a Gantt plot of the middle 12 ms, OUT_DIR/timeline-CASE.png, and prints
a table last. The profiler adds its own launch gaps, so the span can exceed a timed run's median a little."""
import json
import os
import sys

import torch

from csa_dsl import timeline
from csa_dsl.benchmarks import base_record
from csa_dsl.specfile import load_pipeline
from gpu_overlap_check import forward_case, indexer_case, output_of
from gpu_select_check import DEFAULT
from pipeline.lang.presets import preset

CASES = {
    "v4-flash": lambda: forward_case("v4-flash composed 262144", "v4-flash", 262144, DEFAULT),
    "v4-flash-one-stream": lambda: forward_case("v4-flash composed 262144, one stream", "v4-flash", 262144,
                                                [("one stream", False, None)]),
    "indexer": lambda: indexer_case("v4-flash", 262144, DEFAULT),
    "hca": lambda: forward_case("v4-flash-hca composed 262144", "v4-flash-hca", 262144, DEFAULT),
    "v3.2-one-stream": lambda: forward_case("v3.2 composed 131072, one stream", "v3.2", 131072,
                                            [("one stream", False, None)]),
    "v3.2-fp8-mma": lambda: forward_case("v3.2 --fp8-mma composed 131072", load_pipeline("v3.2", fp8_mma=True),
                                         131072, DEFAULT),
    "v3.2-fp8-mma-one-stream": lambda: forward_case("v3.2 --fp8-mma composed 131072, one stream",
                                                    load_pipeline("v3.2", fp8_mma=True), 131072,
                                                    [("one stream", False, None)]),
}


def call_of(case):
    """One call of a gpu_overlap_check case's first variant (gpu_overlap_check.output_of)."""
    _, _, _, inputs, runs, _ = case
    _, fwd, prog = runs[0]
    return output_of(fwd, prog, inputs)


def main():
    out_dir = sys.argv[1]
    rows = []
    for key in sys.argv[2:] or list(CASES):
        case = CASES[key]()
        host = {}
        ks = timeline.trace(call_of(case), host)
        rec = dict(base_record("timeline", preset("v4-flash"), 1, case[2], "composed"), case=case[0],
                   **timeline.summary(ks), host=host)
        with open(os.path.join(out_dir, f"timeline-{key}.json"), "w") as f:
            json.dump(rec, f, indent=1)
        timeline.gantt(ks, os.path.join(out_dir, f"timeline-{key}.png"), case[0])
        rows.append(rec)
        del case
        torch.cuda.empty_cache()
    for r in rows:
        print(f"\n{r['case']}: span {r['span_ms']:.1f} ms")
        print("  busy    " + ", ".join(f"{s} {v:.1f}" for s, v in sorted(r["busy_ms"].items(), key=lambda kv: -kv[1])))
        print("  at once " + "; ".join(f"{s}: {v:.1f}" for s, v in list(r["concurrent_ms"].items())[:8]))
        h = r["host"]
        if h:
            print(f"  host: launches over {h['launch_span_ms']:.1f} ms; launch to start (median ms) "
                  + ", ".join(f"{s} {d['median']:.2f}" for s, d in h["launch_to_start_ms"].items()))


if __name__ == "__main__":
    main()
