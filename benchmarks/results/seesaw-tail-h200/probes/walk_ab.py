"""A/B of the Gluon score walk before (out/ab/score_gluon_before.py = a660c23's) and after, one process."""
import dataclasses, json, os, sys
import torch, triton
sys.path.insert(0, os.path.dirname(__file__))
import csa_dsl
import score_gluon_before as old
from csa_dsl.benchmarks import time_ms
from kernels_triton.indexer import cost as icost, kernel as ikernel, score_gluon as new
from gpu_bf16_walk_check import operands

OUT = sys.argv[1]
res = []
def rec(**r):
    res.append(r); print(r, flush=True)
    json.dump(res, open(os.path.join(OUT, "walk-ab.json"), "w"), indent=1)

for name, S, fp8 in (("v4-flash", 262144, False), ("v4-flash-bf16", 262144, False), ("v3.2", 131072, True), ("v3.2", 131072, False)):
    spec = csa_dsl.preset(name)
    n, m, topk = 2048, spec.ratio, spec.indexer.topk
    args, packed = operands(spec, S, n, fp8=fp8, seed=n)
    q, k = (args["q8"], args["k8"]) if packed else (args["q"], args["k"])
    ld = icost.score_ld(S // m)
    for wname in ("WALK_4X2", "WALK_2X4"):
        outs = {}
        fns = {}
        for tag, mod in (("before", old), ("after", new)):
            out = torch.full((n, ld), float("nan"), device="cuda")
            gm = torch.full((n, icost.select_capacity(topk)), float("nan"), device="cuda")
            fn = (lambda mod=mod, out=out, gm=gm, w=getattr(mod, wname): mod.score_chunk_gluon(
                q, args.get("q_scale"), args["w"], k, args.get("k_scale"), out, s_first=S - n, ratio=m,
                store_queries=ikernel.score_block_queries(q.shape[1]), gmax=gm, walk=w))
            fn(); torch.cuda.synchronize()
            outs[tag] = (out, gm); fns[tag] = fn
        same = all(torch.equal(a.nan_to_num(0), b.nan_to_num(0)) and torch.equal(a.isnan(), b.isnan())
                   for a, b in zip(outs["before"], outs["after"]))
        t = {"before": [], "after": []}
        for _ in range(3):
            for tag in ("before", "after"):
                t[tag].append(triton.testing.do_bench(fns[tag], warmup=20, rep=200, return_mode="median"))
        rec(case=f"last chunk {name}{' fp8_mma' if fp8 else ''} {S} {wname} + maxima", same_bits=same, **t)
    del args, q, k, outs, fns

# forwards: v4-flash composed, before/after alternating; v3.2 fp8_mma with the new walk 4x2 vs 2x4
for name, S, fp8 in (("v4-flash", 262144, False), ("v3.2", 131072, True), ("v3.2", 131072, False)):
    sp = csa_dsl.preset(name)
    if fp8:
        sp = sp.replace(indexer=dataclasses.replace(sp.indexer, fp8_mma=True))
    inp = csa_dsl.random_inputs(sp, 1, S, "cuda", seed=0)
    fwd = csa_dsl.compile(sp, "cuda")
    if name == "v4-flash":
        variants = {"before": lambda: setattr(ikernel, "score_chunk_gluon", old.score_chunk_gluon),
                    "after": lambda: setattr(ikernel, "score_chunk_gluon", new.score_chunk_gluon)}
    else:
        variants = {"after 2x4": lambda: setattr(new, "gluon_walk", lambda gm, r=4: new.WALK_2X4 if not gm else new.WALK_2X4),
                    "after 4x2": lambda: setattr(new, "gluon_walk", lambda gm, r=4: new.WALK_4X2 if gm else new.WALK_2X4)}
    orig_walk = new.gluon_walk
    outs, t = {}, {v: [] for v in variants}
    for v, setv in variants.items():
        setv(); outs[v] = fwd(**inp)
    for _ in range(3):
        for v, setv in variants.items():
            setv(); t[v].append(time_ms(lambda: fwd(**inp)))
    a, b = list(outs.values())
    rec(case=f"composed {name}{' fp8_mma' if fp8 else ''} {S}", same_bits=bool(torch.equal(a, b)), **t)
    setattr(ikernel, "score_chunk_gluon", new.score_chunk_gluon); new.gluon_walk = orig_walk
    del inp, fwd, outs; torch.cuda.empty_cache()
