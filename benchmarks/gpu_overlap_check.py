"""Scores on a side stream (Schedule.overlap: a ring of two score buffers) against one stream, on the same
inputs in the same process (issue: FP8 steps and speed):

    python benchmarks/gpu_overlap_check.py OUT_DIR

Per case, every variant's output must be bit-identical to the first's after every run (the streams
reorder nothing the program computes; the first variant is run twice, so nondeterminism shows too);
variants are timed in alternation (3 rounds, medians), the peak above inputs + output measured once.
Writes OUT_DIR/overlap-check.json and prints a table last. benchmarks/gpu_fused_rope_check.py runs its
cases with the same alternation (run_case)."""
import contextlib
import gc
import json
import os
import sys

import torch

from csa_dsl.benchmarks import base_record, indexer_inputs, output_bytes, peak_above, time_ms
from csa_dsl.compile import compile as compile_pipeline
from kernels_triton.indexer.cost import default_chunk
from pipeline import interpreter
from pipeline.composer import Packed, compose_indexer
from pipeline.inputs import random_inputs, random_packed_inputs
from pipeline.lang import defaults
from pipeline.lang.presets import preset
from pipeline.lang.schedule import Schedule

ROUNDS = 3


def forward_case(name, spec_name, S, variants, lengths=None):
    """variants: (label, overlap, query_chunk); spec_name: a preset's name, or a Pipeline."""
    spec = preset(spec_name) if isinstance(spec_name, str) else spec_name
    if lengths:
        cu, inputs = random_packed_inputs(spec, lengths, "cuda", seed=S)
        inputs = dict(inputs, cu_seqlens=cu)
    else:
        inputs = random_inputs(spec, 1, S, "cuda", seed=S)
    runs = []
    for label, overlap, chunk in variants:
        fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", overlap=overlap,
                                                                      query_chunk=chunk))
        prog = fwd.plan(S, packed=Packed(len(lengths), max(lengths)) if lengths else None)
        runs.append((label, fwd, prog))
    return name, spec, S, inputs, runs, output_bytes(spec, 1, S, longest=max(lengths) if lengths else None)


def indexer_case(spec_name, S, variants):
    spec = preset(spec_name)
    ix = spec.indexer
    T = S // spec.ratio
    inputs = indexer_inputs(spec, 1, S, seed=S)
    runs = []
    for label, overlap, chunk in variants:
        chunk = chunk or min(S, default_chunk(T, defaults.INDEXER_SCORE_BUFFER, defaults.INDEXER_MIN_CHUNK))
        prog = compose_indexer(ix.heads, ix.dim, ix.topk, spec.ratio, 1, S, chunk, "cuda", quant=ix.quant,
                               overlap=overlap)
        runs.append((label, None, prog))
    return f"indexer {spec_name} {S}", spec, S, inputs, runs, 1 * S * ix.topk * 4


@contextlib.contextmanager
def patched(module, name, value):
    """module.name is `value` inside the block: the switch of one library decision that a variant turns off
    (the library reads it through the module at call time)."""
    kept = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, kept)


class Patched:
    """A compiled forward whose execute runs with module.name patched to `value` (see `patched`)."""

    def __init__(self, fwd, module, name, value):
        self.fwd, self.switch = fwd, (module, name, value)

    def execute(self, prog, **inputs):
        with patched(*self.switch):
            return self.fwd.execute(prog, **inputs)


def same(rec, out, first) -> bool:
    """Bit-identical; if not, the query rows that differ go into the record."""
    if torch.equal(out, first):
        return True
    rows = (out != first).reshape(out.shape[0] * out.shape[1], -1).any(1).nonzero().flatten()
    rec.setdefault("mismatches", []).append({"rows": int(rows.numel()), "first_rows": rows[:16].tolist()})
    return False


def output_of(fwd, prog, inputs):
    """One call of a case's variant, returning its output: the compiled forward's, or the ids of the standalone
    indexer's program (fwd None, indexer_case)."""
    if fwd is None:
        return lambda: interpreter.execute(prog, inputs, torch.device("cuda"))["ids"]
    return lambda: fwd.execute(prog, **inputs)


def run_case(case, kind="overlap-check"):
    name, spec, S, inputs, runs, out_b = case
    recs, result, first = [], {}, None

    def call(fwd, prog):
        run = output_of(fwd, prog, inputs)

        def fn():
            result.pop("out", None)
            result["out"] = run()
        return fn
    for label, fwd, prog in runs:
        rec = base_record(kind, spec, 1, S, "composed")
        rec.update(case=name, variant=label, streams=list(prog.streams), query_chunk=prog.chunk,
                   planned_peak_gib=prog.peak_bytes / 2**30, seed=S)
        result.clear()
        rec["peak_gib"] = peak_above(call(fwd, prog), extra_baseline=out_b)
        out = result["out"]
        if first is None:
            first = out.clone()
        rec["identical_to_first"] = same(rec, out, first)
        rec["times"] = []
        recs.append(rec)
    result.clear()
    for _ in range(ROUNDS):
        for (label, fwd, prog), rec in zip(runs, recs):
            rec["times"].append(time_ms(call(fwd, prog)))
            rec["identical_to_first"] &= same(rec, result["out"], first)   # the last timed run's
    for (label, fwd, prog), rec in zip(runs, recs):
        rec["median_ms"] = sorted(rec["times"])[len(rec["times"]) // 2]
    result.clear()
    return recs


def run_all(cases, out_json, kind="overlap-check", run=run_case, extra=()):
    """Run each case (a function that builds it) with `run` (run_case, or a function of the same signature
    that adds fields), write every record to out_json after each case and print a table last, with the
    record fields `extra` as more columns; a case that fails is reported and the others still run."""
    allrecs = []
    for mk in cases:
        try:
            recs = run(mk(), kind)
        except Exception as e:      # noqa: BLE001
            recs = [{"case": "?", "status": f"error: {type(e).__name__}: {str(e)[:300]}"}]
        allrecs += recs
        json.dump(allrecs, open(out_json, "w"), indent=1)
        gc.collect()            # the case's inputs sit in reference cycles (compiled forwards, closures)
        torch.cuda.empty_cache()
    print(f"{'case':<28} {'variant':<22} {'ms':>8} {'peak GiB':>9} {'plan GiB':>9} identical"
          + "".join(f" {k}" for k in extra))
    for r in allrecs:
        if "median_ms" in r:
            print(f"{r['case']:<28} {r['variant']:<22} {r['median_ms']:8.1f} {r['peak_gib']:9.3f} "
                  f"{r['planned_peak_gib']:9.3f} {r['identical_to_first']}" + "".join(f" {r.get(k)}" for k in extra))
        else:
            print(r)
    return allrecs


def main():
    V_PAIR = [("one stream", False, None), ("one stream, again", False, None), ("overlap", True, None)]
    V_FULL = V_PAIR + [("overlap, chunk 1024", True, 1024)]
    run_all([lambda: forward_case("v4-flash 262144", "v4-flash", 262144, V_FULL),
             lambda: indexer_case("v4-flash", 262144, V_PAIR),
             lambda: forward_case("v4-flash packed 4x65536", "v4-flash", 262144, V_PAIR, lengths=[65536] * 4),
             lambda: forward_case("v4-flash 65536", "v4-flash", 65536, V_PAIR),
             lambda: forward_case("v3.2 131072", "v3.2", 131072, V_PAIR),
             lambda: forward_case("v4-flash-selfindex 262144", "v4-flash-selfindex", 262144, V_PAIR),
             lambda: forward_case("v4-flash-bf16 262144", "v4-flash-bf16", 262144, V_PAIR)],
            os.path.join(sys.argv[1], "overlap-check.json"))


if __name__ == "__main__":
    main()
