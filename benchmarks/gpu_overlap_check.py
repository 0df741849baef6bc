"""Scores on a side stream (Schedule.overlap) and the register caps that let a selection CTA sit beside
two FP8 score programs, measured on the same inputs in the same process (issue: FP8 steps and speed):

    python benchmarks/gpu_overlap_check.py OUT_DIR

Per case, every variant's output must be bit-identical to the first's (the streams reorder nothing the
program computes); variants are timed in alternation (3 rounds, medians), the peak above inputs + output
measured once. Writes OUT_DIR/overlap-check.json and prints a table last."""
import json
import os
import sys

import torch

from csa_dsl.benchmarks import base_record, output_bytes, peak_above, time_ms
from csa_dsl.compile import compile as compile_pipeline
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.indexer.cost import default_chunk
from pipeline import interpreter
from pipeline.composer import Packed, compose_indexer
from pipeline.inputs import random_inputs, random_packed_inputs
from pipeline.lang import defaults
from pipeline.lang.presets import preset
from pipeline.lang.schedule import Schedule

OUT = sys.argv[1]
ROUNDS = 3
CAPS = {"caps": (224, 64), "nocaps": (None, None)}     # (SCORE_FP8_MAXNREG, SELECT_MAXNREG)


def set_caps(name):
    indexer_kernel.SCORE_FP8_MAXNREG, indexer_kernel.SELECT_MAXNREG = CAPS[name]


def forward_case(name, spec_name, S, variants, lengths=None):
    """variants: (label, overlap, caps, query_chunk)."""
    spec = preset(spec_name)
    if lengths:
        cu, inputs = random_packed_inputs(spec, lengths, "cuda", seed=S)
        inputs = dict(inputs, cu_seqlens=cu)
    else:
        inputs = random_inputs(spec, 1, S, "cuda", seed=S)
    runs = []
    for label, overlap, caps, chunk in variants:
        fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", overlap=overlap,
                                                                      query_chunk=chunk))
        prog = fwd.plan(S, packed=Packed(len(lengths), max(lengths)) if lengths else None)
        runs.append((label, caps, fwd, prog))
    return name, spec, S, inputs, runs, output_bytes(spec, 1, S, longest=max(lengths) if lengths else None)


def indexer_case(spec_name, S, variants):
    spec = preset(spec_name)
    ix = spec.indexer
    T = S // spec.ratio
    g = torch.Generator(device="cuda").manual_seed(S)
    inputs = {"idx_q": torch.randn(1, S, ix.heads, ix.dim, device="cuda", dtype=torch.bfloat16, generator=g),
              "idx_w": torch.randn(1, S, ix.heads, device="cuda", generator=g) * (ix.dim * ix.heads) ** -0.5,
              "idx_k": torch.randn(1, T, ix.dim, device="cuda", dtype=torch.bfloat16, generator=g)}
    runs = []
    for label, overlap, caps, chunk in variants:
        chunk = chunk or min(S, default_chunk(T, defaults.INDEXER_SCORE_BUFFER, defaults.INDEXER_MIN_CHUNK))
        prog = compose_indexer(ix.heads, ix.dim, ix.topk, spec.ratio, 1, S, chunk, "cuda", quant=ix.quant,
                               overlap=overlap)
        runs.append((label, caps, None, prog))
    return f"indexer {spec_name} {S}", spec, S, inputs, runs, 1 * S * ix.topk * 4


def run_case(case):
    name, spec, S, inputs, runs, out_b = case
    recs, result, first = [], {}, None

    def call(fwd, prog):
        def fn():
            result.pop("out", None)
            if fwd is None:
                result["out"] = interpreter.execute(prog, inputs, torch.device("cuda"))["ids"]
            else:
                result["out"] = fwd.execute(prog, **inputs)
        return fn
    for label, caps, fwd, prog in runs:
        set_caps(caps)
        rec = base_record("overlap-check", spec, 1, S, "composed")
        rec.update(case=name, variant=label, caps=CAPS[caps], streams=list(prog.streams), query_chunk=prog.chunk,
                   planned_peak_gib=prog.peak_bytes / 2**30, seed=S)
        result.clear()
        rec["peak_gib"] = peak_above(call(fwd, prog), extra_baseline=out_b)
        out = result["out"]
        if first is None:
            first = out.clone()
        rec["identical_to_first"] = bool(torch.equal(out, first))
        rec["times"] = []
        recs.append(rec)
    result.clear()
    for _ in range(ROUNDS):
        for (label, caps, fwd, prog), rec in zip(runs, recs):
            set_caps(caps)
            rec["times"].append(time_ms(call(fwd, prog)))
    for (label, caps, fwd, prog), rec in zip(runs, recs):
        rec["median_ms"] = sorted(rec["times"])[len(rec["times"]) // 2]
    result.clear()
    return recs


V_FULL = [("off, no caps (before)", False, "nocaps", None), ("off, caps", False, "caps", None),
          ("overlap, no caps", True, "nocaps", None), ("overlap, caps", True, "caps", None),
          ("overlap, caps, chunk 1024", True, "caps", 1024)]
V_PAIR = [("off, no caps (before)", False, "nocaps", None), ("overlap, caps", True, "caps", None)]
cases = [lambda: forward_case("v4-flash 262144", "v4-flash", 262144, V_FULL),
         lambda: indexer_case("v4-flash", 262144, V_FULL[:4] + [("overlap, caps, chunk 512", True, "caps", 512)]),
         lambda: forward_case("v4-flash packed 4x65536", "v4-flash", 262144, V_PAIR, lengths=[65536] * 4),
         lambda: forward_case("v4-flash 65536", "v4-flash", 65536, V_PAIR),
         lambda: forward_case("v3.2 131072", "v3.2", 131072, V_PAIR),
         lambda: forward_case("v4-flash-selfindex 262144", "v4-flash-selfindex", 262144, V_PAIR),
         lambda: forward_case("v4-flash-bf16 262144", "v4-flash-bf16", 262144, V_PAIR)]
allrecs = []
for mk in cases:
    try:
        recs = run_case(mk())
    except Exception as e:      # noqa: BLE001  a case that fails is reported, the others still run
        recs = [{"case": "?", "status": f"error: {type(e).__name__}: {str(e)[:300]}"}]
    allrecs += recs
    json.dump(allrecs, open(os.path.join(OUT, "overlap-check.json"), "w"), indent=1)
    torch.cuda.empty_cache()
print(f"{'case':<28} {'variant':<28} {'ms':>8} {'peak GiB':>9} {'plan GiB':>9} identical")
for r in allrecs:
    if "median_ms" in r:
        print(f"{r['case']:<28} {r['variant']:<28} {r['median_ms']:8.1f} {r['peak_gib']:9.3f} "
              f"{r['planned_peak_gib']:9.3f} {r['identical_to_first']}")
    else:
        print(r)
