"""One GPU call's worth of checks and timings, phase by phase, each isolated (errors are reported, not fatal).

    python benchmarks/gpu_session.py --phase indexer,composed --out DIR [--seqs ...]

Phases:
  indexer      recall vs exact fp32 top-k (three presets, S = 8192) and the indexer benchmark
               (score vs selection breakdown) at --indexer-seqs
  indexer1m    the indexer at S = 1,048,576
  composed     composed vs reference at S = 16,384 (v4-flash, v3.2), then the composed benchmark at
               --composed-seqs (and materialize where it fits)
Writes DIR/<phase>.json (records in the benchmarks schema) and prints a table per phase.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import csa_dsl  # noqa: E402
from pipeline import benchmarks as bm  # noqa: E402
from pipeline import reference as ref  # noqa: E402
from pipeline.metrics import rel_err, tie_aware_recall  # noqa: E402


def indexer_recall(name: str, S: int) -> dict:
    spec = csa_dsl.preset(name)
    ix, m = spec.indexer, spec.ratio
    T = S // m
    g = torch.Generator(device="cuda").manual_seed(1234 + S)
    q = torch.randn(1, S, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(1, S, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(1, T, ix.dim, device="cuda", generator=g).bfloat16()
    t = time.time()
    got = csa_dsl.indexer_topk(q, w, k, ix.topk, m)
    torch.cuda.synchronize()
    first = time.time() - t
    k_eff = min(ix.topk, T)
    worst, strict, dets = 1.0, 1.0, {}
    for s0 in range(0, S, 1024):
        pos = torch.arange(s0, s0 + 1024, device="cuda")
        exact = ref.mask_invisible(ref.indexer_scores(q[:, s0:s0 + 1024], w[:, s0:s0 + 1024], k)[0], pos, m)
        rec, det = tie_aware_recall(got[0, s0:s0 + 1024], exact, k_eff)
        worst, strict = min(worst, rec), min(strict, det["strict_recall"])
        for kk in ("duplicates", "wrong_padding_rows", "invisible_picks"):
            dets[kk] = dets.get(kk, 0) + det[kk]
    return {"preset": name, "seq_len": S, "recall": worst, "strict_recall": strict, **dets,
            "first_call_s": first}


def composed_check(name: str, S: int) -> dict:
    spec = csa_dsl.preset(name)
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=77)
    t = time.time()
    out, idx = csa_dsl.compile(spec, "cuda")(**inp, return_indices=True)
    torch.cuda.synchronize()
    first = time.time() - t
    W = spec.attention.window
    k_idx = ref.index_keys(spec, inp)
    if spec.indexer.compressor is not None:   # recall on the keys the pipeline used (Triton compressor)
        from kernels_triton import compressor as kc
        k_idx = kc.compress(inp["idx_kv"], inp["idx_gate"], inp["idx_ape"], inp["idx_norm"], spec.indexer.compressor)
    rows = ref.attention_rows(spec, inp["kv"], ref.compressed_kv(spec, inp))
    res = {"preset": name, "seq_len": S, "first_call_s": first, "nan": int(torch.isnan(out.float()).sum())}
    errs, recs = [], []
    for s0 in (0, S // 2, S - 512):
        s1 = s0 + 512
        pos = torch.arange(s0, s1, device="cuda")
        exact = ref.mask_invisible(ref.indexer_scores(inp["idx_q"][:, s0:s1], inp["idx_w"][:, s0:s1], k_idx)[0],
                                   pos, spec.ratio)
        sel = idx[0, s0:s1, W:]
        sel = torch.where(sel >= 0, sel - spec.selected_offset(S), sel)
        rec, det = tie_aware_recall(sel, exact, spec.topk_eff(S))
        recs.append(rec)
        att = ref.sparse_attention(inp["q"][:, s0:s1], rows, idx[:, s0:s1], spec.attention.softmax_scale,
                                   spec.attention.v_dim, inp.get("sink"))
        errs.append(rel_err(out[:, s0:s1], ref.finish_output(spec, att, pos)))
    res.update(recall=min(recs), out_rel_err=max(errs))
    return res


def run_phase(phase: str, args) -> list:
    recs = []
    if phase == "indexer":
        for name in ("v4-flash", "v4-pro", "v3.2"):
            try:
                r = indexer_recall(name, 8192)
            except Exception as e:  # noqa: BLE001
                r = {"preset": name, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            print("recall", r, flush=True)
            recs.append({"bench": "indexer_recall", **r})
        spec = csa_dsl.preset("v4-flash")
        recs += bm.bench_indexer(spec, args.indexer_seqs, paths=tuple(args.indexer_paths.split(",")),
                                 progress=False)
    elif phase == "indexer1m":
        spec = csa_dsl.preset("v4-flash")
        recs += bm.bench_indexer(spec, [1048576], paths=("triton",), progress=False)
    elif phase == "composed":
        for name in ("v4-flash", "v3.2"):
            try:
                r = composed_check(name, 16384)
            except Exception as e:  # noqa: BLE001
                r = {"preset": name, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
            print("composed check", r, flush=True)
            recs.append({"bench": "composed_check", **r})
        spec = csa_dsl.preset("v4-flash")
        recs += bm.bench_composed(spec, args.composed_seqs, paths=tuple(args.composed_paths.split(",")),
                                  progress=False)
    else:
        raise SystemExit(f"unknown phase {phase}")
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", default="indexer,composed")
    ap.add_argument("--out", required=True)
    ap.add_argument("--indexer-seqs", type=lambda s: [int(x) for x in s.split(",")],
                    default=[32768, 65536, 131072, 262144])
    ap.add_argument("--indexer-paths", default="triton,materialize")
    ap.add_argument("--composed-seqs", type=lambda s: [int(x) for x in s.split(",")], default=[16384, 65536, 262144])
    ap.add_argument("--composed-paths", default="composed")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(torch.cuda.get_device_name(), bm.versions(), bm.commit(), flush=True)
    for phase in args.phase.split(","):
        t = time.time()
        try:
            recs = run_phase(phase, args)
        except Exception as e:  # noqa: BLE001
            recs = [{"bench": phase, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}]
        with open(os.path.join(args.out, f"{phase}.json"), "w") as f:
            json.dump(recs, f, indent=1, default=str)
        print(f"== phase {phase}: {time.time() - t:.1f} s", flush=True)
        rows = [r for r in recs if "median_ms" in r]
        if rows:
            print(bm.table(rows), flush=True)
        for r in recs:
            if "median_ms" in r and r.get("score_ms") is not None:
                print(f"  S={r['seq_len']:,}: score {r['score_ms']:.1f} ms ({r['score_tflops']:.0f} TFLOP/s), "
                      f"select {r['select_ms']:.1f} ms", flush=True)
            if r.get("stage_ms"):
                print(f"  S={r['seq_len']:,} stages: {r['stage_ms']}", flush=True)


if __name__ == "__main__":
    main()
