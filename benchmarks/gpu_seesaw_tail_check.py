"""The seesaw attention split on rows with a RoPE tail (V3.2's 576-dim rows: the P tiles in the tail's ring)
against "ws", on one GPU, same inputs, same process:

    python benchmarks/gpu_seesaw_tail_check.py OUT_DIR TAG

1. correctness: both variants against the fp32 reference (kernels_tilelang/sparse_mla/naive.py) on fresh random
   576-dim inputs (seed printed), NaN-poisoned outputs: lists of 2,048 with holes and an empty row, with and
   without a sink and LSE, 64 and 128 heads, the causal bound (V3.2's: every visible row), the implicit window;
   the fused inverse RoPE bit-identical to the RoPE kernel after the same variant;
2. the attention alone, v3.2's shape (128 heads, 2,048 keys), 16,384 queries of 131,072 rows, alternating;
3. v3.2 composed at S = 131,072, the default and `fp8_mma`, the attention's variant alternating.
Writes OUT_DIR/seesaw-tail-TAG.json and prints a table last."""
import dataclasses
import faulthandler
import json
import os
import sys
import time

import torch

import csa_dsl
from csa_dsl.benchmarks import attention_calls, attention_inputs, base_record, peak_above, time_ms
from gpu_seesaw_check import check_attention, use_variant
from kernels_tilelang.sparse_mla import kernel as sparse_mla
from kernels_tilelang.sparse_mla.cost import attention_flop
from kernels_triton.rope.kernel import apply_rope_
from kernels_triton.rope.tables import Rotary, fill_tables
from pipeline import planner
from pipeline.metrics import rel_err

VARIANTS = ("ws", "seesaw")
D, DV = 576, 512


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    faulthandler.dump_traceback_later(560, exit=True)     # a deadlocked kernel ends the run with stacks, not a hang
    seed = time.time_ns() % 2**31
    torch.manual_seed(seed)
    print("seed", seed)
    res = {"seed": seed, "tree": tag, "correctness": [], "attention": [], "composed": []}
    path = os.path.join(out_dir, f"seesaw-tail-{tag}.json")
    t0 = time.time()
    rope = (448, 64, False)
    v32 = (128, D, DV, 2048, False, False)     # v3.2's class (no sink)
    jobs = {"": [(64, D, DV, 2048, True, False), (64, D, DV, 2048, True, True), (64, D, DV, 2048, False, True),
                 (64, D, DV, 2048, True, False, rope), v32],
            "-bounded": [(64, D, DV, 2048, True, False), v32], "-window": [(64, D, DV, 128, True, False)]}
    for fam in VARIANTS:
        for walk, classes in jobs.items():
            errors = {k: e for k, (e, _) in sparse_mla.precompile(classes, (fam + walk,)).items() if e}
            print("precompile", fam + walk, errors or "ok", round(time.time() - t0))

    def check(*args, **kw):
        rec, out = check_attention(*args, **kw)
        res["correctness"].append(rec)
        return out

    def inputs(Sq, H, R, NI=2048, sink=True, holes=0.2):
        q = (torch.randn(1, Sq, H, D, device="cuda") * 0.5).to(torch.bfloat16)
        kv = (torch.randn(1, R, D, device="cuda") * 0.5).to(torch.bfloat16)
        idx = torch.stack([torch.randperm(R, device="cuda")[:NI] for _ in range(Sq)])[None].int()
        idx = idx.masked_fill(torch.rand(idx.shape, device="cuda") < holes, -1)
        idx[0, 3] = -1                                            # a query without keys
        return q, kv, idx.contiguous(), (torch.randn(H, device="cuda") * 2) if sink else None

    cos = torch.empty(8192, 32, device="cuda")
    sin = torch.empty_like(cos)
    fill_tables(cos, sin, rot=Rotary(dim=64, base=160000.0, factor=16.0, original_seq_len=65536))
    q, kv, idx, snk = inputs(128, 64, 6000)
    q2, kv2, idx2, _ = inputs(64, 128, 6000, sink=False)
    pos = 200 + torch.arange(128, device="cuda")[:, None]
    causal = torch.randint(0, 6000, (128, 2048), device="cuda")
    causal = torch.where(torch.arange(2048, device="cuda")[None] < pos + 1, causal, -1)[None].int().contiguous()
    outs = {}
    for v in VARIANTS:
        outs[v] = check("lists of 2048, holes, an empty row", v, q, kv, idx, snk)
        check("with LSE", v, q, kv, idx, snk, lse=True)
        check("no sink, with LSE", v, q, kv, idx, None, lse=True)
        check("128 heads, no sink", v, q2, kv2, idx2, None)
        check("causal bound (V3.2's: rows < pos + 1)", v, q, kv, causal, snk, pos0=200, causal_bound=(2048, 1))
        check("implicit window", v, q, kv, None, snk, pos0=3000, window=128)
        plain = sparse_mla.sparse_mla_fwd(q, kv, idx, D ** -0.5, DV, sink=snk, variant=v, pos0=100)
        fused = sparse_mla.sparse_mla_fwd(q, kv, idx, D ** -0.5, DV, sink=snk, variant=v, pos0=100,
                                          rope_cos=cos, rope_sin=sin)
        same = bool(torch.equal(fused, apply_rope_(plain.clone(), cos, sin, 100)))
        res["correctness"].append({"case": "fused inverse RoPE = the RoPE kernel after", "variant": v, "ok": same})
        print("fused rope", v, same)
    res["seesaw_vs_ws_rel_diff"] = rel_err(outs["seesaw"].float(), outs["ws"].float())
    json.dump(res, open(path, "w"), indent=1)

    # ---------------------------------------------------------------- 2. the attention alone
    spec = csa_dsl.preset("v3.2")
    a = spec.attention
    n, R = 16384, 131072
    sets = [attention_inputs(spec, n, R, seed=i) for i in range(2)]
    flop = attention_flop(a.heads, a.qk_dim, a.v_dim, int((sets[0][2] >= 0).sum()))
    recs = {v: dict(base_record("attention", spec, 1, n, f"tilelang-{v}"), tree=tag, variant=v, times=[])
            for v in VARIANTS}
    for _ in range(3):
        for v in VARIANTS:
            recs[v]["times"].append(time_ms(attention_calls(sets, a, variant=v)))
    for v in VARIANTS:
        r = recs[v]
        r["median_ms"] = sorted(r["times"])[1]
        r["tflops"] = flop / (r["median_ms"] * 1e-3) / 1e12
        res["attention"].append(r)
    sets.clear()
    json.dump(res, open(path, "w"), indent=1)

    # ---------------------------------------------------------------- 3. v3.2 composed
    S = 131072
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=S)
    out_bytes = planner.output_bytes(spec, 1, S)
    for fp8 in (False, True):
        sp = spec.replace(indexer=dataclasses.replace(spec.indexer, fp8_mma=True)) if fp8 else spec
        fwd = csa_dsl.compile(sp, "cuda")
        recs, outs = {}, {}
        for v in VARIANTS:
            use_variant(v)
            outs[v] = fwd(**inp)
            recs[v] = dict(base_record("composed", sp, 1, S, "composed"), tree=tag, variant=v, times=[],
                           peak_gib=peak_above(lambda: fwd(**inp), out_bytes))
        for _ in range(2):
            for v in VARIANTS:
                use_variant(v)
                recs[v]["times"].append(time_ms(lambda: fwd(**inp)))
        diff = rel_err(outs["seesaw"][:, ::64].float(), outs["ws"][:, ::64].float())
        for v in VARIANTS:
            r = recs[v]
            r["median_ms"] = min(r["times"])
            r["rel_diff_seesaw_vs_ws"] = diff
            res["composed"].append(r)
        outs.clear()
        torch.cuda.empty_cache()
        json.dump(res, open(path, "w"), indent=1)
    use_variant(None)

    print(f"seed {seed}; correctness: {sum(r['ok'] for r in res['correctness'])}/{len(res['correctness'])} ok; "
          f"seesaw vs ws {res['seesaw_vs_ws_rel_diff']:.2e}")
    for r in res["correctness"]:
        if not r["ok"]:
            print("FAILED", r)
    for r in res["attention"]:
        print(f"attention v3.2 {r['variant']:<7} {r['times']} ms, {r['tflops']:6.1f} TFLOP/s")
    for r in res["composed"]:
        print(f"composed v3.2 fp8_mma={r['fp8_mma']!s:<5} {r['variant']:<7} {r['times']} ms, peak {r['peak_gib']:.3f} "
              f"GiB (seesaw vs ws {r['rel_diff_seesaw_vs_ws']:.1e})")


if __name__ == "__main__":     # precompile's worker processes import this module
    main()
