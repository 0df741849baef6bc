"""csa-dsl command line: run, bench, ir (see `csa-dsl --help`)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import List, Optional

from .spec import SpecError

DEFAULT_GPU_SEQ = 262144
DEFAULT_CPU_SEQ = 1024


def _seq_list(text: str) -> List[int]:
    try:
        vals = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seq takes comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--seq values must be positive, got {text!r}")
    return vals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csa-dsl", description="Compressed Sparse Attention compiler DSL: run, "
                                "benchmark and inspect the CSA forward (compressor -> indexer -> top-k -> "
                                "sparse attention).")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a pipeline on random inputs; print plan, time, peak memory, output")
    r.add_argument("pipeline", help="preset (v4-flash, v4-pro, v3.2) or SPEC.py defining `pipeline`")
    r.add_argument("--seq", type=int, default=None,
                   help=f"sequence length S (default {DEFAULT_GPU_SEQ:,} on a GPU, {DEFAULT_CPU_SEQ:,} on a CPU)")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--budget", default=None, help="workspace budget beyond inputs+output, e.g. 8GiB")
    r.add_argument("--path", default="auto", choices=["auto", "composed", "materialize", "reference"])
    r.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda if available")
    r.add_argument("--chunk", type=int, default=None, help="query chunk (default: the planner's choice)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    r.add_argument("--json", default=None, help="write the result record to this file")
    r.add_argument("--nproc", type=int, default=1, help="context-parallel ranks (spawns torchrun-style workers)")

    b = sub.add_parser("bench", help="benchmarks: indexer | attention | compressor | composed")
    b.add_argument("what", choices=["indexer", "attention", "composed"])
    b.add_argument("--preset", default="v4-flash", help="preset or SPEC.py")
    b.add_argument("--seq", type=_seq_list, default=None, help="comma-separated sequence lengths")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--path", default=None, help="comma-separated paths (composed: composed,materialize; "
                                                "indexer: triton,materialize)")
    b.add_argument("--budget", default=None)
    b.add_argument("--variant", default="ws", help="attention kernel variant")
    b.add_argument("--json", default=None, help="write records (JSON list) to this file")
    b.add_argument("--plot", default=None, help="write a log-log plot (PNG) to this file")
    b.add_argument("--nproc", type=int, default=1, help="context-parallel ranks (composed only)")

    i = sub.add_parser("ir", help="show generated IR at every level (no GPU needed)",
                       description="Generated IR of a pipeline, without a GPU. Levels: spec, plan (pipeline); "
                       "ttir, ttgir, llir, ptx (Triton stages: compressor, indexer, topk, rope); tir, cuda "
                       "(TileLang stage: attention); all (every level of every stage, best with -o DIR). "
                       "Files written with -o are named <pipeline>.<stage>[-<part>].<level>.")
    i.add_argument("pipeline", nargs="?", default=None, help="preset (v4-flash, v4-pro, v3.2) or SPEC.py "
                   "assigning a csa_dsl.Pipeline to a module-level variable `pipeline`")
    i.add_argument("--level", default=None, help="spec | plan | ttir | ttgir | llir | ptx | tir | cuda | all")
    i.add_argument("--stage", default=None, help="compressor | indexer | topk | attention | rope (default: all)")
    i.add_argument("--seq", type=int, default=DEFAULT_GPU_SEQ, help="S for --level plan")
    i.add_argument("--batch", type=int, default=1)
    i.add_argument("--budget", default="8GiB", help="workspace budget for --level plan")
    i.add_argument("--arch", default="sm_90a")
    i.add_argument("--json", action="store_true", help="JSON for --level spec/plan")
    i.add_argument("-o", "--out-dir", default=None, help="write one file per stage and level into DIR, "
                   "named <pipeline>.<stage>[-<part>].<level> (e.g. v4-flash.indexer.ttgir)")
    i.add_argument("--list", action="store_true", help="list stages, their backends and levels")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "bench":
            return cmd_bench(args)
        if args.cmd == "ir":
            return cmd_ir(args)
    except SpecError as e:
        print(f"csa-dsl: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `csa-dsl ir ... | head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    return 1


# ---------------------------------------------------------------------------------------
def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cmd_run(args) -> int:
    import torch

    from . import compile as compile_pipeline
    from .inputs import input_bytes, random_inputs
    from .schedule import Schedule, parse_bytes
    from .specfile import load_pipeline
    from pipeline.ir import fmt_bytes
    from pipeline.planner import check_fits_device, output_bytes

    spec = load_pipeline(args.pipeline)
    if args.nproc > 1:
        from pipeline.context_parallel import launch_cli
        return launch_cli(args, spec)
    have_gpu = torch.cuda.is_available()
    device = args.device or ("cuda" if have_gpu else "cpu")
    if device == "cuda" and not have_gpu:
        raise SpecError("--device cuda but no CUDA GPU is visible; drop --device to run the CPU path")
    seq = args.seq or (DEFAULT_GPU_SEQ if device == "cuda" else DEFAULT_CPU_SEQ)
    B = args.batch
    if B < 1 or seq < 1:
        raise SpecError("--batch and --seq must be positive")
    sched = Schedule(path=args.path, query_chunk=args.chunk,
                     memory_budget=parse_bytes(args.budget) if args.budget else None)
    fwd = compile_pipeline(spec, device=device, schedule=sched)
    if not have_gpu:
        print(f"No CUDA GPU found: running the CPU {fwd.path} path "
              f"({'exact PyTorch reference' if fwd.path == 'reference' else fwd.backend_name + ' backend'}) "
              f"at S = {seq:,} (pass --seq to change).")
    else:
        print(f"GPU: {torch.cuda.get_device_name()}; path {fwd.path}, backend {fwd.backend_name}")
    print(spec)
    program = None
    if fwd.path == "composed":
        program = fwd.plan(seq, B)
        print(f"plan: query chunk {program.chunk:,}, {-(-seq // program.chunk):,} chunks per batch row, "
              f"workspace {fmt_bytes(program.workspace_bytes)} (budget {fmt_bytes(program.budget)}); "
              f"a materialised [B,S,T] fp32 score would be "
              f"{fmt_bytes(list(program.materialize_bytes.values())[1])}")
        if device == "cuda":
            check_fits_device(spec, B, seq, device, program.chunk, have_inputs=False)
    print(f"inputs: {fmt_bytes(input_bytes(spec, B, seq))}, output: {fmt_bytes(output_bytes(spec, B, seq))}")
    t0 = time.perf_counter()
    inputs = random_inputs(spec, B, seq, device, seed=args.seed)
    print(f"random inputs made in {time.perf_counter() - t0:.1f} s")

    rss0 = _rss_peak_bytes()
    if device == "cuda":
        from pipeline.benchmarks import peak_above, time_ms
        result = {}

        def once():
            result["out"] = fwd(**inputs, progress=False)
            return result["out"]
        peak = peak_above(once, extra_baseline=output_bytes(spec, B, seq))
        ms = time_ms(once, reps=args.reps)
        peak_txt = f"{peak:.3f} GiB above inputs + output (torch.cuda.max_memory_allocated)"
        out = result["out"]
    else:
        ts = []
        out = None
        for i in range(max(1, args.reps)):
            t = time.perf_counter()
            out = fwd(**inputs, progress=(i == 0 and seq >= 4096))
            ts.append((time.perf_counter() - t) * 1e3)
        ms = sorted(ts)[len(ts) // 2]
        peak = (_rss_peak_bytes() - rss0) / 2**30
        peak_txt = (f"{peak:.3f} GiB process peak RSS growth during the forward "
                    f"(peak RSS {_rss_peak_bytes() / 2**30:.2f} GiB)")
    of = out.float()
    nan = int(torch.isnan(of).sum())
    print(f"time: median {ms:.1f} ms over {max(1, args.reps)} runs")
    print(f"peak memory: {peak_txt}")
    print(f"output: out {tuple(out.shape)} {str(out.dtype).replace('torch.', '')}, mean {of.mean():.4g}, "
          f"std {of.std():.4g}, NaN {nan}; out[0,-1,0,:4] = {[round(v, 4) for v in of[0, -1, 0, :4].tolist()]}")
    if args.json:
        from pipeline.benchmarks import base_record, write_json
        rec = base_record("run", spec, B, seq, fwd.path)
        rec.update(median_ms=ms, peak_gib=peak, backend=fwd.backend_name, nan=nan,
                   query_chunk=program.chunk if program else None)
        write_json([rec], args.json)
        print(f"wrote {args.json}")
    return 0 if nan == 0 else 1


def cmd_bench(args) -> int:
    import torch

    from .schedule import parse_bytes
    from .specfile import load_pipeline
    from pipeline import benchmarks as bm

    spec = load_pipeline(args.preset)
    if not torch.cuda.is_available():
        raise SpecError("benchmarks time GPU kernels and need a CUDA GPU; none is visible here "
                        "(`csa-dsl run PRESET` runs the CPU reference)")
    if args.nproc > 1:
        from pipeline.context_parallel import launch_bench
        return launch_bench(args, spec)
    budget = parse_bytes(args.budget) if args.budget else None
    if args.what == "indexer":
        seqs = args.seq or [32768, 65536, 131072, 262144, 524288, 1048576]
        paths = tuple((args.path or "triton,materialize").split(","))
        recs = bm.bench_indexer(spec, seqs, args.batch, paths)
    elif args.what == "attention":
        seqs = args.seq or [4096, 16384, 65536]
        recs = bm.bench_attention(spec, seqs, variant=args.variant)
    else:
        seqs = args.seq or [8192, 16384, 32768, 65536, 131072, 262144]
        paths = tuple((args.path or "composed,materialize").split(","))
        recs = bm.bench_composed(spec, seqs, args.batch, paths, budget=budget)
    print(bm.table(recs))
    if args.json:
        bm.write_json(recs, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        if bm.plot(recs, args.plot):
            print(f"wrote {args.plot}")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
    return 0 if all(r["status"] in ("ok", "oom") or str(r["status"]).startswith("refused") for r in recs) else 1


def cmd_ir(args) -> int:
    import re

    from . import irgen
    from .schedule import parse_bytes
    from .specfile import load_pipeline

    if args.list:
        print(irgen.list_stages())
        return 0
    if args.pipeline is None:
        raise SpecError("name a preset (v4-flash, v4-pro, v3.2) or a SPEC.py, or pass --list")
    if args.level is None:
        raise SpecError(f"pass --level, one of: {', '.join(irgen.LEVELS + (irgen.ALL,))}")
    irgen.plan_items(args.level, args.stage)  # unknown level/stage: fail before loading anything
    spec = load_pipeline(args.pipeline)
    sections = irgen.generate(spec, args.level, args.stage, seq_len=args.seq, batch=args.batch, arch=args.arch,
                              as_json=args.json, budget=parse_bytes(args.budget))
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", spec.name) or "pipeline"
        for name, text in sections.items():
            path = os.path.join(args.out_dir, f"{stem}.{name}")
            with open(path, "w") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            print(f"wrote {path} ({len(text):,} chars)")
        return 0
    for name, text in sections.items():
        if len(sections) > 1:
            print(f"// ===== {spec.name}: {name} =====")
        print(text)
    return 0
