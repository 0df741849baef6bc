"""The window-only layer on the persistent ring kernel against the per-query window kernel, on the same inputs
in the same process (issue: HCA, window-only and the self-index, "v4-window forward <= 15 ms"):

    python benchmarks/gpu_window_ring_check.py OUT_DIR

The per-query kernel is the attention wrapper's path when kernel.ring_window says no (patched here): one query
a CTA, and for a packed batch key lists of the windows. Cases: v4-window at S = 262,144 and packed as 4 x
65,536. Variants are timed in alternation (gpu_overlap_check.run_case: 3 rounds, medians, each variant run
twice so nondeterminism shows); the ring kernel sums the keys in its slot order, so its output differs from the
per-query kernel's by rounding: `rel_vs_first` is the relative norm difference over every 16th query (the
identical flag is False for the other kernel's rows by design). Writes OUT_DIR/window-ring-check.json, prints a table last."""
import os
import sys

import torch
from gpu_overlap_check import Patched, patched, run_all, run_case

from csa_dsl.benchmarks import output_bytes
from csa_dsl.compile import compile as compile_pipeline
from kernels_tilelang.sparse_mla import kernel as sparse_mla
from pipeline.composer import Packed
from pipeline.inputs import random_inputs, random_packed_inputs
from pipeline.lang.presets import preset
from pipeline.metrics import rel_err

# the switch: the wrapper and the composer ask kernel.ring_window whether the ring kernel takes a window
PER_QUERY = (sparse_mla, "ring_window", lambda dim_qk, window, variant=None: False)


def case(name, S, lengths=None):
    def build():
        spec = preset("v4-window")
        if lengths:
            cu, inputs = random_packed_inputs(spec, lengths, "cuda", seed=S)
            inputs = dict(inputs, cu_seqlens=cu)
        else:
            inputs = random_inputs(spec, 1, S, "cuda", seed=S)
        fwd = compile_pipeline(spec, device="cuda")
        packed = Packed(len(lengths), max(lengths)) if lengths else None
        prog = fwd.plan(S, packed=packed)
        with patched(*PER_QUERY):
            prog_pq = fwd.plan(S, packed=packed)
        per_query = Patched(fwd, *PER_QUERY)
        runs = [("ring", fwd, prog), ("ring, again", fwd, prog), ("per-query", per_query, prog_pq),
                ("per-query, again", per_query, prog_pq)]
        return name, spec, S, inputs, runs, output_bytes(spec, 1, S, longest=max(lengths) if lengths else None)
    return build


def run_with_rel(c, kind):
    """run_case's records, each with its output's relative norm difference from the first variant's (on every
    16th query: 16 GiB outputs do not fit twice in float64) and whether its program has key lists."""
    name, spec, S, inputs, runs, out_b = c
    first, rels = None, []
    for _, f, p in runs:
        sub = f.execute(p, **inputs)[..., ::16, :, :].clone()
        first = sub if first is None else first
        rels.append(rel_err(sub, first))
    del first, sub
    torch.cuda.empty_cache()
    recs = run_case(c, kind)
    for r, rel, (_, _, p) in zip(recs, rels, runs):
        r["rel_vs_first"] = rel
        r["key_lists"] = "keys" in p.buffers
    return recs


if __name__ == "__main__":
    run_all([case("v4-window 262144", 262144), case("v4-window packed 4x65536", 262144, [65536] * 4)],
            os.path.join(sys.argv[1], "window-ring-check.json"), "window-ring-check", run=run_with_rel,
            extra=("rel_vs_first", "key_lists"))
