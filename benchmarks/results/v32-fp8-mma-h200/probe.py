"""Probe (not landed): v3.2 at 131,072 with its FP8 index operands multiplied on FP8 tensor cores (the Gluon walk),
as the official V3.2 kernel does, against the default (bf16 MMA, exact). Same inputs, same process."""
import json, os, sys, torch
import csa_dsl
from csa_dsl.benchmarks import base_record, time_ms, peak_above
from kernels_triton.quant import formats
from kernels_triton.indexer import naive as ix_ref
from kernels_triton.quant.naive import quant_dequant
from pipeline.metrics import tie_aware_recall
from pipeline import planner

out_dir = sys.argv[1]
S = int(sys.argv[2]) if len(sys.argv) > 2 else 131072
spec = csa_dsl.preset("v3.2")
inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
recs, ids = [], {}
ob = planner.output_bytes(spec, 1, S)
for mode in ("bf16-mma", "fp8-mma", "bf16-mma"):
    formats.MMA_DTYPE["e4m3"] = torch.float8_e4m3fn if mode == "fp8-mma" else torch.bfloat16
    fwd = csa_dsl.compile(spec, "cuda")
    prog = fwd.plan(S)
    kinds = sorted({c.impl for c in __import__("pipeline.composer", fromlist=["walk_calls"]).walk_calls(prog.body)})
    o, idx = fwd(**inp, return_indices=True)
    ids[mode] = idx
    fn = lambda: fwd(**inp)
    r = dict(base_record("v32-fp8-probe", spec, 1, S, "composed"), mode=mode, median_ms=time_ms(fn),
             peak_gib=peak_above(fn, ob), plan_gib=prog.peak_bytes / 2**30, gmax="gmax" in prog.buffers)
    recs.append(r); print(mode, r["median_ms"], r["peak_gib"], r["gmax"], flush=True)
    del o
    torch.cuda.empty_cache()
a, b = ids["bf16-mma"].sort(-1).values, ids["fp8-mma"].sort(-1).values
same = float((a == b).all(-1).float().mean())
# recall of both against the exact scores of the quantised operands
iq = spec.indexer.quant
xq = lambda x: quant_dequant(x, iq.format, iq.block)
k = xq(inp["idx_k"])
rec = {}
for mode in ("bf16-mma", "fp8-mma"):
    hits = []
    for s0 in (S // 2, S - 256):
        s1 = s0 + 256
        exact = ix_ref.mask_invisible(ix_ref.indexer_scores(xq(inp["idx_q"][:, s0:s1]), inp["idx_w"][:, s0:s1], k)[0],
                                      torch.arange(s0, s1, device="cuda"), 1)
        r, det = tie_aware_recall(ids[mode][0, s0:s1], exact, spec.indexer.topk, rel_tol=0.0)
        hits.append(r)
    rec[mode] = hits
recs.append({"case": "agreement", "queries_same_list": same, "strict_recall_vs_exact": rec})
print("same lists", same, "recall", rec)
json.dump(recs, open(os.path.join(out_dir, "v32-fp8-probe.json"), "w"), indent=1)
