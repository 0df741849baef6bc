"""The selection kernel alone and the forwards it sits in, with a hash of every output, so that the same script
run on two trees (PYTHONPATH at each, one process each, alternating) compares them bit for bit and in time:

    python benchmarks/gpu_select_check.py OUT_DIR TAG

Cases: the selection alone on the last 2,048-query chunk of v4-flash at S = 262,144 (65,536 visible random
fp32 scores a row; v4-pro's top-1,024 and v3.2's top-2,048 the same way); the packing of a chunk's index
queries (pack_alone); v4-flash composed at 262,144, its
standalone indexer, a packed batch of 4 x 65,536 and one sequence of 65,536; v3.2 composed at 131,072.
Medians of `triton.testing.do_bench` (or 3 event-timed runs for calls over 400 ms). Writes
OUT_DIR/select-check-TAG.json and prints a table last."""
import json
import os
import sys

import torch
import triton

from csa_dsl.benchmarks import base_record, time_ms
from gpu_overlap_check import forward_case, indexer_case, output_of
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.quant import kernel as quant_kernel
from pipeline.lang import defaults
from pipeline.lang.presets import preset

DEFAULT = [("default", defaults.OVERLAP_SCORES, None)]     # the library's own schedule (label, overlap, chunk)


def digest(t: torch.Tensor) -> int:
    """A position-weighted sum of the raw bits: equal for bit-identical tensors, different otherwise (almost
    surely). In slices, so a 16 GiB output needs no full-size temporary."""
    flat = t.reshape(-1, t.shape[-1])
    bits = {1: torch.uint8, 2: torch.int16}.get(t.element_size(), torch.int32)     # uint8: FP8 values
    w = torch.arange(1, 1 + flat.shape[1], device=t.device, dtype=torch.int64)
    acc = 0
    for i in range(0, flat.shape[0], 1 << 18):
        part = flat[i:i + (1 << 18)].view(bits).to(torch.int64)
        acc += int((part * w).sum() + (part.sum(1) * torch.arange(i, i + part.shape[0], device=t.device)).sum())
    return acc


def select_alone(topk: int, S: int = 262144, ratio: int = 4, n: int = 2048) -> dict:
    T = S // ratio
    g = torch.Generator(device="cuda").manual_seed(topk)
    scores = torch.randn(n, T + 256, device="cuda", generator=g)
    out = torch.empty(n, topk, dtype=torch.int32, device="cuda")

    def run():
        indexer_kernel.select_chunk(scores, out, s_first=S - n, ratio=ratio, k_eff=topk, topk=topk)
    run()
    return {"case": f"select alone, top-{topk}, {n} rows of ~{T} scores", "digest": digest(out),
            "median_ms": triton.testing.do_bench(run, warmup=20, rep=200, return_mode="median")}


def pack_alone(S: int = 262144, n: int = 2048) -> dict:
    """The FP4-step packing of one 2,048-query chunk of v4-flash's index queries (quant.pack_rows, as the composed
    program packs them before the score): the digest of the e4m3 values and scales."""
    ix = preset("v4-flash").indexer
    g = torch.Generator(device="cuda").manual_seed(S)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    q8 = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda")
    qs = torch.empty(q.shape[:-1], device="cuda")

    def run():
        quant_kernel.pack_rows(q, q8, qs, fmt="e2m1", block=32)
    run()
    return {"case": f"pack queries alone, {n} x {ix.heads} x {ix.dim}", "digest": digest(q8) + digest(qs),
            "median_ms": triton.testing.do_bench(run, warmup=20, rep=200, return_mode="median")}


def timed(case) -> dict:
    """One gpu_overlap_check case (its inputs, and the compiled forward's program at the default overlap, or
    the standalone indexer's): the output's digest and the median time."""
    name, spec, S, inputs, runs, _ = case
    _, fwd, prog = runs[0]
    call = output_of(fwd, prog, inputs)
    return {"case": name, "digest": digest(call()), "median_ms": time_ms(call)}


FORWARDS = [lambda: timed(forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT)),
            lambda: timed(indexer_case("v4-flash", 262144, DEFAULT)),
            lambda: timed(forward_case("v4-flash packed 4x65536", "v4-flash", 262144, DEFAULT, lengths=[65536] * 4)),
            lambda: timed(forward_case("v4-flash 65536", "v4-flash", 65536, DEFAULT)),
            lambda: timed(forward_case("v3.2 131072", "v3.2", 131072, DEFAULT))]


def run_records(cases, bench: str, out_dir: str, tag: str, preset_name: str = "v4-flash",
                show: tuple = ("digest",)) -> list:
    """Run each case (a function returning one record {case, median_ms, ...} or a list of them) into records of
    tree `tag`, write OUT_DIR/BENCH-TAG.json after each and print a table last (the time, then the `show` fields a
    record has); a case that fails is recorded under its function's name and the rest run."""
    recs = []
    for mk in cases:
        try:
            got = mk()
        except Exception as e:      # noqa: BLE001
            got = {"case": getattr(mk, "__name__", "?"), "status": f"error: {type(e).__name__}: {str(e)[:300]}"}
        for rec in (got if isinstance(got, list) else [got]):
            recs.append(dict(base_record(bench, preset(preset_name), 1, 0, "composed"), tree=tag, **rec))
        json.dump(recs, open(os.path.join(out_dir, f"{bench}-{tag}.json"), "w"), indent=1)
        torch.cuda.empty_cache()
    for r in recs:
        fields = "".join(f"  {k} {r[k]:.4f}" if isinstance(r[k], float) else f"  {k} {r[k]}" for k in show
                         if r.get(k) is not None)
        print(f"{tag:<8} {r['case']:<56} {r.get('median_ms') or float('nan'):9.3f} ms{fields}"
              + (f"  {r['status']}" if r.get("status") != "ok" else ""))
    return recs


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    run_records([lambda: select_alone(512), lambda: select_alone(1024), lambda: select_alone(2048), pack_alone]
                + FORWARDS,
                "select-check", out_dir, tag)


if __name__ == "__main__":
    main()
