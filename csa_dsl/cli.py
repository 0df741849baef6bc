"""csa-dsl command line: run, bench, ir (see `csa-dsl --help`).

Every error a user can fix (a bad argument, spec, input or plan) is one line
`csa-dsl: error: ...` with exit code 2; nothing is launched before the checks pass.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
from typing import List, Optional

import torch

from pipeline import context_parallel as cp
from pipeline import planner
from pipeline.composer import Packed
from pipeline.inputs import check_finite, input_bytes, random_inputs, random_packed_inputs
from pipeline.lang import defaults
from pipeline.lang.errors import SpecError
from pipeline.lang.presets import MODEL_COMPRESS_RATIOS, PRESET_NAMES
from pipeline.stages import IR_SECTIONS
from pipeline.lang.schedule import PATHS, Schedule, parse_bytes
from pipeline.lang.spec import SCORE_ROUNDINGS
from pipeline.metrics import tensor_stats
from pipeline.program import fmt_bytes

from . import benchmarks as bm
from . import irgen
from .compile import compile as compile_pipeline
from .specfile import load_pipeline

BENCH_KINDS = ("indexer", "attention", "composed", "model")
PRESETS = ", ".join(PRESET_NAMES)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one `csa-dsl: error:` line, exit code 2."""

    def error(self, message):
        print(f"csa-dsl: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            v = int(float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {text}")
        return v
    return parse


def _seq_list(text: str) -> List[int]:
    try:
        vals = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seq takes comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--seq values must be >= 1, got {text!r}")
    return vals


def _lengths(text: str) -> List[int]:
    try:
        vals = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--varlen takes comma-separated sequence lengths, got {text!r}") from None
    if not vals or min(vals) < 0 or sum(vals) < 1:
        raise argparse.ArgumentTypeError(f"--varlen lengths must be >= 0 with at least one token, got {text!r}")
    return vals


def _budget(text: str) -> int:
    try:
        v = parse_bytes(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"--budget must be positive, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="csa-dsl", description="Compressed Sparse Attention compiler DSL: run, benchmark and "
                "inspect the CSA forward (compressor -> indexer -> top-k -> sparse attention).")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run a pipeline on random inputs; print plan, time, peak memory, output")
    r.add_argument("pipeline", help=f"preset ({PRESETS}) or SPEC.py defining `pipeline`")
    r.add_argument("--seq", type=_positive("--seq"), default=None,
                   help=f"sequence length S (default {defaults.GPU_SEQ_LEN:,} on a GPU, {defaults.CPU_SEQ_LEN:,} "
                        f"on a CPU)")
    r.add_argument("--batch", type=_positive("--batch"), default=1)
    r.add_argument("--varlen", type=_lengths, default=None, metavar="L1,L2,...",
                   help="a packed batch of sequences of these lengths (fwd.varlen; replaces --seq/--batch)")
    r.add_argument("--budget", type=_budget, default=None,
                   help="memory the forward may use beyond inputs and outputs, e.g. 8GiB (every path)")
    r.add_argument("--path", default="auto", choices=PATHS)
    r.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda if available")
    r.add_argument("--chunk", type=_positive("--chunk"), default=None,
                   help="query chunk (default: the planner's choice, a multiple of 64)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--reps", type=_positive("--reps"), default=3, help="timed repetitions (median reported)")
    r.add_argument("--json", default=None, help="write the result record to this file")
    r.add_argument("--nproc", type=_positive("--nproc"), default=1,
                   help="context-parallel ranks (starts one local process per rank)")
    _index_score_args(r)
    r.add_argument("--no-check-inputs", dest="check_inputs", action="store_false",
                   help="skip the scan of the inputs for NaN/Inf (on by default)")

    b = sub.add_parser("bench", help=f"benchmarks: {' | '.join(BENCH_KINDS)}")
    b.add_argument("what", choices=BENCH_KINDS)
    b.add_argument("--preset", default="v4-flash", help="preset or SPEC.py (model: a model, "
                   f"{', '.join(MODEL_COMPRESS_RATIOS)}: every layer kind of it, times its layer count)")
    b.add_argument("--seq", type=_seq_list, default=None, help="comma-separated sequence lengths")
    b.add_argument("--batch", type=_positive("--batch"), default=1)
    b.add_argument("--varlen", type=_lengths, default=None, metavar="L1,L2,...",
                   help="composed: a packed batch of these lengths vs each length as its own run")
    b.add_argument("--path", default=None, help="comma-separated paths (composed: composed,materialize; "
                                                "indexer: triton,materialize)")
    b.add_argument("--budget", type=_budget, default=None)
    b.add_argument("--variant", default="auto", choices=["auto", "ws", "seesaw", "pipelined"],
                   help="attention kernel variant (auto: seesaw)")
    b.add_argument("--json", default=None, help="write records (JSON list) to this file")
    b.add_argument("--plot", default=None, help="write a log-log plot (PNG) to this file")
    b.add_argument("--nproc", type=_positive("--nproc"), default=1, help="context-parallel ranks (composed only)")
    _index_score_args(b)

    i = sub.add_parser("ir", help="show generated IR at every level (no GPU needed)",
                       description="Generated IR of a pipeline, without a GPU. Levels: spec, plan (pipeline); "
                       "ttir, ttgir, llir, ptx (Triton stages: compressor, indexer, topk, hca, rope); tir, cuda "
                       "(TileLang stage: attention); all (every level of every stage, best with -o DIR). "
                       "Files written with -o are named <pipeline>.<stage>[-<part>].<level>.")
    i.add_argument("pipeline", nargs="?", default=None, help=f"preset ({PRESETS}) or SPEC.py "
                   "assigning a csa_dsl.Pipeline to a module-level variable `pipeline`")
    i.add_argument("--level", default=None, help="spec | plan | ttir | ttgir | llir | ptx | tir | cuda | all")
    i.add_argument("--stage", default=None, help=f"{' | '.join(IR_SECTIONS)} (default: all)")
    i.add_argument("--seq", type=_positive("--seq"), default=defaults.GPU_SEQ_LEN, help="S for --level plan")
    i.add_argument("--batch", type=_positive("--batch"), default=1)
    i.add_argument("--budget", type=_budget, default=defaults.IR_PLAN_BUDGET,
                   help=f"memory budget for --level plan (default {fmt_bytes(defaults.IR_PLAN_BUDGET)})")
    i.add_argument("--nproc", type=_positive("--nproc"), default=1,
                   help="--level plan: the program of one rank of a context-parallel run over N ranks")
    i.add_argument("--rank", type=int, default=0, help="with --nproc: which rank's program (default 0)")
    i.add_argument("--arch", default="sm_90a")
    i.add_argument("--json", action="store_true", help="JSON for --level spec/plan")
    i.add_argument("-o", "--out-dir", default=None, help="write one file per stage and level into DIR, "
                   "named <pipeline>.<stage>[-<part>].<level> (e.g. v4-flash.indexer.ttgir)")
    i.add_argument("--list", action="store_true", help="list stages, their backends and levels")
    _index_score_args(i)
    return p


def _index_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-rounding", default=None, choices=sorted(SCORE_ROUNDINGS),
                   help="the index score's rounding (default: the spec's, fp32 in the presets; bf16: the official "
                        "V4 code's, which it then ranks as, ties aside)")
    p.add_argument("--fp8-mma", action="store_true", default=None,
                   help="V3.2's e4m3 index operands multiplied on FP8 tensor cores, as V3.2's indexer kernels do "
                        "(faster; the FP8 accumulator's rounding), instead of as bf16 (exact)")


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:          # --help (0) or a bad command line (2, already reported)
        return int(e.code or 0)
    try:
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "bench":
            return cmd_bench(args)
        return cmd_ir(args)
    except SpecError as e:
        print(f"csa-dsl: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `csa-dsl ir ... | head` closed the pipe: not an error
        sys.stderr.close()
        return 0


# ---------------------------------------------------------------------------------------
def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cmd_run(args) -> int:
    spec = load_pipeline(args.pipeline, args.score_rounding, args.fp8_mma)
    have_gpu = torch.cuda.is_available()
    device = args.device or ("cuda" if have_gpu else "cpu")
    if device == "cuda" and not have_gpu:
        raise SpecError("--device cuda but no CUDA GPU is visible; drop --device to run the CPU path")
    lengths = args.varlen
    if lengths and (args.seq is not None or args.batch != 1 or args.nproc > 1):
        raise SpecError("--varlen gives the sequences of one packed batch: drop --seq, --batch and --nproc")
    seq = (sum(lengths) if lengths else args.seq if args.seq is not None
           else defaults.GPU_SEQ_LEN if device == "cuda" else defaults.CPU_SEQ_LEN)
    B = args.batch
    sched = Schedule(path=args.path, query_chunk=args.chunk, memory_budget=args.budget,
                     check_inputs=args.check_inputs)
    if args.nproc > 1:
        return _run_cp(args, spec, seq)
    fwd = compile_pipeline(spec, device=device, schedule=sched)
    if not have_gpu:
        print(f"No CUDA GPU found: running the CPU {fwd.path} path "
              f"({'exact PyTorch stages' if fwd.path == 'reference' else fwd.backend_name + ' backend'}) "
              f"at S = {seq:,} (pass --seq to change).")
    else:
        print(f"GPU: {torch.cuda.get_device_name()}; path {fwd.path}, backend {fwd.backend_name}")
    print(spec)
    packed = Packed(len(lengths), max(lengths)) if lengths else None
    program = fwd.plan(seq, B, packed=packed)
    if lengths:
        print(f"packed batch: {len(lengths)} sequences of {', '.join(f'{L:,}' for L in lengths)} tokens "
              f"({seq:,} in all, the longest {packed.max_seqlen:,}); each runs as its own B = 1 sequence")
    n_chunks = -(-seq // program.chunk)
    mat = list(program.materialize_bytes.values())
    print(f"plan: query chunk {program.chunk:,} ({n_chunks:,} per batch row); workspace "
          f"{fmt_bytes(program.workspace_bytes)} + transient {fmt_bytes(program.transient_bytes)} = "
          f"{fmt_bytes(program.peak_bytes)} (budget {fmt_bytes(program.budget)})"
          + (f"; a materialised [B,S,T] fp32 score would be {fmt_bytes(mat[1])}" if mat else ""))
    if device == "cuda":
        planner.check_fits_device(spec, B, seq, program, device, have_inputs=False)
    out_b = sum(b.nbytes for b in program.buffers.values() if b.scope == "output")
    print(f"inputs: {fmt_bytes(input_bytes(spec, B, seq))}, output: {fmt_bytes(out_b)}")
    t0 = time.perf_counter()
    if lengths:     # packed inputs [N, ...] and their cu_seqlens, which execute() takes beside them
        cu, inputs = random_packed_inputs(spec, lengths, device, seed=args.seed)
        run_args = dict(inputs, cu_seqlens=cu)
    else:
        inputs = random_inputs(spec, B, seq, device, seed=args.seed)
        run_args = inputs
    print(f"random inputs made in {time.perf_counter() - t0:.1f} s (seed {args.seed})")

    if args.check_inputs:      # what the first call's check costs, reported apart from the forward's time
        t0 = time.perf_counter()
        check_finite(inputs)
        print(f"input check: no NaN or Inf in the {len(inputs)} inputs ({(time.perf_counter() - t0) * 1e3:.1f} ms "
              f"per call; --no-check-inputs skips it)")

    # the first call shows progress (it compiles the kernels, and on a CPU it is the long one) and
    # checks the inputs as the schedule says; the timed repetitions reuse those checked inputs
    first = [True]

    def once():
        is_first = first[0]
        first[0] = False
        return fwd.execute(program, progress=is_first, check_inputs=None if is_first else False, **run_args)

    if device == "cuda":
        result = {}

        def keep():   # the previous output is freed before the next is made: one output alive at a time
            result.pop("out", None)
            result["out"] = once()
        peak = bm.peak_above(keep, extra_baseline=out_b)
        ms = bm.time_ms(keep, reps=args.reps)
        out = result.pop("out")
        peak_txt = f"{peak:.3f} GiB above inputs + output (torch.cuda.max_memory_allocated)"
    else:
        rss0 = _rss_peak_bytes()
        ts, out = [], None
        for _ in range(args.reps):
            out = None
            t = time.perf_counter()
            out = once()
            ts.append((time.perf_counter() - t) * 1e3)
        ms = sorted(ts)[len(ts) // 2]
        peak = (_rss_peak_bytes() - rss0) / 2**30
        peak_txt = (f"{peak:.3f} GiB process peak RSS growth during the forward, output included "
                    f"(peak RSS {_rss_peak_bytes() / 2**30:.2f} GiB; planned {fmt_bytes(program.peak_bytes)} "
                    f"+ output {fmt_bytes(out_b)})")
    st = tensor_stats(out)
    bad = st["nan"] + st["inf"]
    print(f"time: median {ms:.1f} ms over {args.reps} run{'s' if args.reps > 1 else ''} (the forward)")
    print(f"peak memory: {peak_txt}")
    print(f"output: out {tuple(out.shape)} {str(out.dtype).replace('torch.', '')}, mean {st['mean']:.4g}, "
          f"std {st['std']:.4g}, NaN {st['nan']}, Inf {st['inf']}; out[{'' if lengths else '0,'}-1,0,:4] = "
          f"{[round(v, 4) for v in out[..., -1, 0, :4].reshape(-1, 4)[0].float().tolist()]}")
    if args.json:
        rec = bm.base_record("run", spec, B, seq, fwd.path)
        if lengths:
            rec.update(bench="run-varlen", lengths=lengths)
        rec.update(median_ms=ms, peak_gib=peak, backend=fwd.backend_name, nan=st["nan"], inf=st["inf"],
                   query_chunk=program.chunk, planned_peak_gib=program.peak_bytes / 2**30,
                   status="ok" if bad == 0 else "non-finite output")
        bm.write_json([rec], args.json)
        print(f"wrote {args.json}")
    return 0 if bad == 0 else 1


def _run_cp(args, spec, seq: int) -> int:
    per_rank = cp.run_local(spec, seq, args.nproc, args.batch, args.seed, args.reps, args.budget)
    print(f"context-parallel {spec.name} over {args.nproc} ranks, S = {seq:,}")
    print(bm.rank_table(per_rank))
    if args.json:
        bm.write_json(bm.cp_records(spec, seq, args.nproc, args.batch, per_rank), args.json)
        print(f"wrote {args.json}")
    return 0 if all(r["nan"] == 0 for r in per_rank) else 1


def cmd_bench(args) -> int:
    if args.what == "model" and (args.score_rounding or args.fp8_mma):
        raise SpecError("--score-rounding and --fp8-mma apply to one pipeline's benchmarks, not to `bench model`'s "
                        "layers")
    spec = load_pipeline(args.preset, args.score_rounding, args.fp8_mma)
    if not torch.cuda.is_available():
        raise SpecError("benchmarks time GPU kernels and need a CUDA GPU; none is visible here "
                        "(`csa-dsl run PRESET` runs the CPU reference)")
    if args.varlen and (args.what != "composed" or args.seq or args.batch != 1 or args.nproc > 1):
        raise SpecError("--varlen applies to `bench composed` on one GPU, without --seq and --batch (the lengths "
                        "are the batch)")
    if args.nproc > 1 and args.what != "composed":
        raise SpecError("--nproc applies to `bench composed` only")
    seqs = args.seq or list(defaults.BENCH_SEQS["composed-cp" if args.nproc > 1 else args.what])
    if args.nproc > 1:
        recs = []
        for S in seqs:
            per_rank = cp.run_local(spec, S, args.nproc, args.batch, 0, defaults.REPS, args.budget)
            print(f"S = {S:,}")
            print(bm.rank_table(per_rank))
            recs += bm.cp_records(spec, S, args.nproc, args.batch, per_rank)
    elif args.what == "indexer":
        paths = tuple((args.path or "triton,materialize").split(","))
        recs = bm.bench_indexer(spec, seqs, args.batch, paths)
    elif args.what == "attention":
        recs = bm.bench_attention(spec, seqs, variant=None if args.variant == "auto" else args.variant)
    elif args.varlen:
        recs = bm.bench_varlen(spec, args.varlen, budget=args.budget)
    elif args.what == "model":
        recs = bm.bench_model(args.preset, seqs, args.batch, budget=args.budget)
    else:
        paths = tuple((args.path or "composed,materialize").split(","))
        recs = bm.bench_composed(spec, seqs, args.batch, paths, budget=args.budget)
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
    if args.list:
        print(irgen.list_stages())
        return 0
    if args.pipeline is None:
        raise SpecError(f"name a preset ({PRESETS}) or a SPEC.py, or pass --list")
    if args.level is None:
        raise SpecError(f"pass --level, one of: {', '.join(irgen.LEVELS + (irgen.ALL,))}")
    if not 0 <= args.rank < args.nproc:
        raise SpecError(f"--rank must be in [0, --nproc = {args.nproc}), got {args.rank}")
    irgen.plan_items(args.level, args.stage)  # unknown level/stage: fail before loading anything
    spec = load_pipeline(args.pipeline, args.score_rounding, args.fp8_mma)
    sections = irgen.generate(spec, args.level, args.stage, seq_len=args.seq, batch=args.batch, arch=args.arch,
                              as_json=args.json, budget=args.budget, nproc=args.nproc, rank=args.rank)
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
