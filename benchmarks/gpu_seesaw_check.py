"""The "seesaw" attention split against "ws" on the H200 (issue: FP8 steps and speed, "Attention: split the
work evenly between the two consumer warpgroups"):

    python benchmarks/gpu_seesaw_check.py OUT_DIR

1. correctness: both variants against the fp32 reference (kernels_tilelang/sparse_mla/naive.py) on fresh
   random inputs (seed printed), NaN-poisoned outputs: full lists with holes and empty rows, LSE, no sink,
   the causal bound, the implicit window, 128 heads; the fused inverse RoPE bit-identical to the RoPE
   kernel after the same variant;
2. the attention alone on 65,536 queries with random valid lists (bench attention's inputs), v4-flash
   and v4-pro shapes, the variants timed in alternation (TFLOP/s of valid pairs);
3. composed forwards at S = 262,144 (v4-flash, v4-flash-hca, v4-window, v4-pro) with each variant.
Writes OUT_DIR/seesaw-check.json and prints a table last."""
import faulthandler
import gc
import json
import os
import sys
import time

import torch

from csa_dsl.benchmarks import attention_calls, attention_inputs, base_record, output_bytes, peak_above, time_ms
from csa_dsl.compile import compile as compile_pipeline
from kernels_tilelang.sparse_mla import kernel as sparse_mla
from kernels_tilelang.sparse_mla import naive
from kernels_tilelang.sparse_mla.cost import attention_flop
from kernels_triton.rope.kernel import apply_rope_
from kernels_triton.rope.tables import Rotary, fill_tables
from pipeline.inputs import random_inputs
from pipeline.lang.presets import preset
from pipeline.lang.schedule import Schedule
from pipeline.metrics import rel_err


def use_variant(v):
    """The attention variant the composed programs run from now on (kernel.attend's default; None: the kernel's)."""
    sparse_mla.attend.__kwdefaults__["variant"] = v


def check_attention(name, variant, q, kv, idx, snk, lse=False, **kw):
    """One sparse_mla_fwd call (scale D^-0.5, 512 value dims) into a NaN-poisoned output against the fp32 reference
    (idx None: the implicit window of kw's pos0 and window): (record, output). The record says ok when no NaN is left,
    the relative error is <= 1e-2 and, with lse, the LSE's <= 1e-3 (a row's -inf LSE must be -inf in both)."""
    D, DV = q.shape[-1], 512
    ids = idx if idx is not None else naive.window_indices(
        torch.arange(kw["pos0"], kw["pos0"] + q.shape[1], device="cuda"), kw["window"])[None]
    ref = naive.sparse_attention(q, kv, ids, D ** -0.5, DV, snk, return_lse=lse)
    out = torch.full((1, q.shape[1], q.shape[2], DV), float("nan"), dtype=torch.bfloat16, device="cuda")
    got = sparse_mla.sparse_mla_fwd(q, kv, idx, D ** -0.5, DV, sink=snk, variant=variant, out=out, return_lse=lse,
                                    **kw)
    torch.cuda.synchronize()
    rec = {"case": name, "variant": variant, "nan": int(torch.isnan(out.float()).sum()),
           "rel_err": rel_err(out.float(), ref[0] if lse else ref)}
    if lse:     # a query without keys and no sink has LSE -inf in both: compared as equal
        fin = torch.isfinite(ref[1])
        rec["lse_inf_agree"] = bool(torch.equal(got[1][~fin], ref[1][~fin].float()))
        rec["lse_rel_err"] = rel_err(got[1][fin], ref[1][fin]) if rec["lse_inf_agree"] else float("inf")
    rec["ok"] = rec["nan"] == 0 and rec["rel_err"] <= 1e-2 and rec.get("lse_rel_err", 0) <= 1e-3
    print(rec)
    return rec, out


def main():
    OUT = sys.argv[1]
    VARIANTS = ("ws", "seesaw")
    faulthandler.dump_traceback_later(560, exit=True)     # a deadlocked kernel ends the run with stacks, not a hang
    seed = time.time_ns() % 2**31
    torch.manual_seed(seed)
    print("seed", seed)
    res = {"seed": seed, "correctness": [], "attention": [], "composed": []}
    t0 = time.time()
    rope, no_rope = (448, 64, False), sparse_mla.NO_ROPE
    print("precompile", sparse_mla.precompile(
        [(64, 512, 512, 640, True, False, r) for r in (no_rope, rope)] + [(64, 512, 512, 640, True, True),
         (64, 512, 512, 640, False, True), (128, 512, 512, 1152, True, False), (128, 512, 512, 1152, True, False, rope)],
        ("seesaw",)), round(time.time() - t0))
    print("precompile", sparse_mla.precompile([(64, 512, 512, 2176, True, False, rope), (64, 512, 512, 640, True, False)],
                                              ("seesaw-bounded", "ws-bounded")), round(time.time() - t0))
    print("precompile", sparse_mla.precompile([(64, 512, 512, 128, True, False, rope), (64, 512, 512, 128, True, False)],
                                              ("seesaw-window", "ws-window")), round(time.time() - t0))


    def dump():
        json.dump(res, open(os.path.join(OUT, "seesaw-check.json"), "w"), indent=1)


    # ---------------------------------------------------------------- 1. correctness
    def inputs(Sq, H, NI, R, sink=True, holes=0.2):
        q = (torch.randn(1, Sq, H, 512, device="cuda") * 0.5).to(torch.bfloat16)
        kv = (torch.randn(1, R, 512, device="cuda") * 0.5).to(torch.bfloat16)
        idx = torch.stack([torch.randperm(R, device="cuda")[:NI] for _ in range(Sq)])[None].int()
        idx = idx.masked_fill(torch.rand(idx.shape, device="cuda") < holes, -1)
        idx[0, 3] = -1                                            # a query without keys
        snk = (torch.randn(H, device="cuda") * 2) if sink else None
        return q, kv, idx.contiguous(), snk

    def check(*args, **kw):
        res["correctness"].append(check_attention(*args, **kw)[0])


    cos = torch.empty(8192, 32, device="cuda")
    sin = torch.empty_like(cos)
    fill_tables(cos, sin, rot=Rotary(dim=64, base=160000.0, factor=16.0, original_seq_len=65536))
    for v in VARIANTS:
        q, kv, idx, snk = inputs(256, 64, 640, 6000)
        check("v4-flash lists, holes, an empty row", v, q, kv, idx, snk)
        check("v4-flash with LSE", v, q, kv, idx, snk, lse=True)
        check("no sink, with LSE", v, q, kv, idx, None, lse=True)
        q2, kv2, idx2, snk2 = inputs(128, 128, 1152, 6000)
        check("128 heads, 1152 keys", v, q2, kv2, idx2, snk2)
        bounded = torch.where(torch.arange(640, device="cuda") < 128 + 40, idx, -1).int().contiguous()
        check("causal bound", v, q, kv, bounded, snk, pos0=200, window=128, causal_bound=(512, 4))
        check("implicit window", v, q, kv, None, snk, pos0=3000, window=128)
        plain = sparse_mla.sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=snk, variant=v, pos0=100)
        fused = sparse_mla.sparse_mla_fwd(q, kv, idx, 512 ** -0.5, 512, sink=snk, variant=v, pos0=100,
                                          rope_cos=cos, rope_sin=sin)
        same = bool(torch.equal(fused, apply_rope_(plain.clone(), cos, sin, 100)))
        res["correctness"].append({"case": "fused inverse RoPE = the RoPE kernel after", "variant": v, "ok": same})
        print("fused rope", v, same)
    dump()

    # ---------------------------------------------------------------- 2. the attention alone
    for name in ("v4-flash", "v4-pro"):
        spec = preset(name)
        a = spec.attention
        S = 65536
        R = S + S // spec.ratio
        sets = [attention_inputs(spec, S, R, seed=i) for i in range(2)]
        sink = torch.randn(a.heads, device="cuda")
        flop = attention_flop(a.heads, a.qk_dim, a.v_dim, int((sets[0][2] >= 0).sum()))
        recs = {v: dict(base_record("attention", spec, 1, S, f"tilelang-{v}"), times=[]) for v in VARIANTS}
        outs = {}
        for v in VARIANTS:
            outs[v] = sparse_mla.sparse_mla_fwd(*sets[0][:3], a.softmax_scale, a.v_dim, sink=sink, variant=v)
        diff = rel_err(outs["seesaw"][:, :4096], outs["ws"][:, :4096])      # (fp64 copies of all would not fit)
        for _ in range(3):
            for v in VARIANTS:
                recs[v]["times"].append(time_ms(attention_calls(sets, a, sink, v)))
        for v in VARIANTS:
            r = recs[v]
            r["median_ms"] = sorted(r["times"])[1]
            r["tflops"] = flop / (r["median_ms"] * 1e-3) / 1e12
            r["variant"] = v
            r["rel_diff_seesaw_vs_ws"] = diff
            res["attention"].append(r)
        del sets, outs
        dump()

    # ---------------------------------------------------------------- 3. composed forwards
    for name in ("v4-flash", "v4-flash-hca", "v4-window", "v4-pro"):
        spec = preset(name)
        S = 262144
        inputs_ = random_inputs(spec, 1, S, "cuda", seed=S)
        fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed"))
        prog = fwd.plan(S)
        result, outs = {}, {}
        recs = {v: dict(base_record("composed", spec, 1, S, "composed"), variant=v, times=[]) for v in VARIANTS}

        def fn():
            result.pop("out", None)
            result["out"] = fwd.execute(prog, **inputs_)
        for v in VARIANTS:
            use_variant(v)
            recs[v]["peak_gib"] = peak_above(fn, extra_baseline=output_bytes(spec, 1, S))
            outs[v] = result.pop("out").clone()
        for _ in range(3):
            for v in VARIANTS:
                use_variant(v)
                recs[v]["times"].append(time_ms(fn))
        use_variant("ws")
        diff = rel_err(outs["seesaw"][:, ::64], outs["ws"][:, ::64])      # every 64th query
        for v in VARIANTS:
            r = recs[v]
            r["median_ms"] = sorted(r["times"])[1]
            r["rel_diff_seesaw_vs_ws"] = diff
            res["composed"].append(r)
        inputs_ = outs = fwd = prog = fn = None      # freed before the next preset's
        result.clear()
        gc.collect()
        torch.cuda.empty_cache()
        dump()

    print(f"seed {seed}; correctness: {sum(r['ok'] for r in res['correctness'])}/{len(res['correctness'])} ok")
    for r in res["correctness"]:
        if not r["ok"]:
            print("FAILED", r)
    for r in res["attention"]:
        print(f"attention {r['preset']:<10} {r['variant']:<7} {r['median_ms']:8.2f} ms {r['tflops']:6.1f} TFLOP/s "
              f"(seesaw vs ws {r['rel_diff_seesaw_vs_ws']:.1e})")
    for r in res["composed"]:
        print(f"composed {r['preset']:<14} {r['variant']:<7} {r['median_ms']:8.1f} ms peak {r['peak_gib']:.2f} GiB "
              f"(seesaw vs ws {r['rel_diff_seesaw_vs_ws']:.1e})")


if __name__ == "__main__":     # precompile's worker processes import this module
    main()
