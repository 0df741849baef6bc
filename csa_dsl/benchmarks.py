"""Benchmarks (not tests): the indexer, the attention and the composed forward, as `csa-dsl bench` runs them.

Every record has at least: bench, preset, batch, seq_len, device, median_ms,
peak_gib (above the inputs, and above the output for the composed forward),
tflops (useful work only), commit, versions, path, status ('ok' | 'oom' |
'refused: ...' | 'error: ...').

The peer the indexer is compared with is StreamIndex, a chunked Triton indexer (per query
chunk and key chunk: an fp32 score tile, the causal mask applied afterwards, torch.topk per
tile and a merge); its published H200 figures are below, and docs/performance.md says how
it was run beside csa-dsl on the same inputs.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import triton
import triton.testing

from kernels_tilelang.sparse_mla import kernel as sparse_mla
from kernels_tilelang.sparse_mla.cost import attended_pairs, attention_flop
from kernels_triton.compressor.kernel import compress as compress_rows
from kernels_triton.rope.tables import cos_sin
from kernels_triton.indexer.cost import default_chunk, score_flop, visible_pairs
from pipeline import interpreter
from pipeline.composer import Packed, compose_indexer
from pipeline.inputs import random_inputs, random_packed_inputs
from pipeline.lang import defaults
from pipeline.lang.errors import PlanError, SpecError
from pipeline.lang.presets import model_layers
from pipeline.lang.schedule import Schedule
from pipeline.lang.spec import Pipeline, SelfIndex
from pipeline.stages.compressor import params as compressor_params
from pipeline.stages.compressor import role_quant, rotary
from pipeline.planner import output_bytes

from .compile import compile as compile_pipeline
from .ops import indexer_topk

# StreamIndex's published indexer times on one H200, v4-flash, B = 1
STREAMINDEX_H200_MS = {32768: 30.8, 65536: 122.2, 131072: 484.7, 262144: 1935.3, 524288: 7730.1, 1048576: 30899.6}
STREAMINDEX_H100_MS = {32768: 31.7, 65536: 126.1, 131072: 502.7, 262144: 2006.8}
STREAMINDEX_H200_COMPOSED = {"seq_len": 262144, "median_ms": 1968.8, "peak_gib": 18.56}


# ---------------------------------------------------------------------------------------
# environment
def commit() -> str:
    env = os.environ.get("CSA_COMMIT")
    if env:
        return env
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        h = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if h.returncode == 0:
            return h.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def versions() -> Dict[str, str]:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    v["triton"] = triton.__version__
    try:
        import tilelang
        v["tilelang"] = tilelang.__version__
    except Exception:  # tilelang import can fail without a CUDA toolkit; report, don't crash
        v["tilelang"] = "unavailable"
    v["cuda"] = str(torch.version.cuda)
    return v


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def base_record(bench: str, spec: Pipeline, batch: int, seq_len: int, path: str) -> dict:
    return {"bench": bench, "preset": spec.name, "batch": batch, "seq_len": seq_len, "device": device_name(),
            "path": path, "commit": commit(), "versions": versions(), "status": "ok",
            "median_ms": None, "peak_gib": None, "tflops": None,
            # the index score's rounding and MMA (Indexer.score_rounding, fp8_mma; None: no lightning indexer),
            # which the preset's name does not say once --score-rounding or --fp8-mma replaced them
            "score_rounding": getattr(spec.indexer, "score_rounding", None),
            "fp8_mma": getattr(spec.indexer, "fp8_mma", None)}


# ---------------------------------------------------------------------------------------
# timing and memory
def time_ms(fn: Callable[[], object], long_ms: float = defaults.LONG_CALL_MS, reps: int = defaults.REPS) -> float:
    """Median milliseconds: triton.testing.do_bench for short functions; for long ones
    (over `long_ms`) one warm-up and `reps` event-timed runs (do_bench's 5 estimate runs
    alone would take minutes at S = 1M)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        first = e0.elapsed_time(e1)
        if first < long_ms:
            return float(triton.testing.do_bench(fn, warmup=max(25, 2 * first), rep=max(100, 10 * first),
                                                 return_mode="median"))
        ts = []
        for _ in range(reps):
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        return float(sorted(ts)[len(ts) // 2])
    ts = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return float(sorted(ts)[len(ts) // 2])


def peak_above(fn: Callable[[], object], extra_baseline: int = 0) -> float:
    """GiB allocated at peak while fn runs, above what was allocated before it (minus extra_baseline)."""
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    res = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base - extra_baseline
    del res
    return peak / 2**30


@contextlib.contextmanager
def reported(rec: dict):
    """A benchmark reports, it does not crash: a failure inside becomes the record's status."""
    try:
        _free_cuda()
        yield
    except PlanError as e:
        rec["status"] = f"refused: {e}"
    except Exception as e:  # noqa: BLE001
        rec["status"] = "oom" if is_oom(e) else f"error: {type(e).__name__}: {str(e)[:300]}"
    finally:
        _free_cuda()


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free_cuda():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# work counts
def indexer_flops(spec: Pipeline, batch: int, seq_len: int) -> float:
    return score_flop(spec.indexer.heads, spec.indexer.dim, visible_pairs(seq_len, spec.ratio)) * batch


# ---------------------------------------------------------------------------------------
# indexer
def indexer_inputs(spec: Pipeline, batch: int, seq_len: int, seed: int) -> Dict[str, torch.Tensor]:
    """Random bf16 indexer operands on the GPU: idx_q [B, S, HI, DI], idx_w [B, S, HI], idx_k [B, S // m, DI]."""
    ix = spec.indexer
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, seq_len, ix.heads, ix.dim, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(batch, seq_len, ix.heads, device="cuda", generator=g) * (ix.dim * ix.heads) ** -0.5
    k = torch.randn(batch, seq_len // spec.ratio, ix.dim, device="cuda", dtype=torch.bfloat16, generator=g)
    return {"idx_q": q, "idx_w": w, "idx_k": k}


def bench_indexer(spec: Pipeline, seqs: Sequence[int], batch: int = 1, paths=("triton", "materialize"),
                  progress: bool = True) -> List[dict]:
    """csa_dsl.indexer_topk on random bf16 operands; 'materialize' is the same program with one chunk of
    all S queries on the PyTorch stages (the [B, S, HI, T] einsum of the public reference code)."""
    if spec.indexer is None:
        raise SpecError(f"{spec.name!r} is a {spec.layer.upper()} layer: it has no indexer to benchmark")
    recs = []
    bar = _bar(len(seqs) * len(paths), f"indexer {spec.name}", progress)
    for S in seqs:
        for path in paths:
            rec = base_record("indexer", spec, batch, S, path)
            rec["flop"] = indexer_flops(spec, batch, S)
            with reported(rec):
                _time_indexer(rec, spec, batch, S, path)
            recs.append(rec)
            bar.update(1)
    bar.close()
    return recs


def _time_indexer(rec: dict, spec: Pipeline, batch: int, S: int, path: str) -> None:
    """One indexer record's numbers (its operands live only in this call)."""
    ix = spec.indexer
    rec["seed"] = S
    q, w, k = indexer_inputs(spec, batch, S, seed=S).values()
    rec["quant"] = ix.quant.format if ix.quant is not None else None
    if path == "triton":
        fn = lambda: indexer_topk(q, w, k, ix.topk, spec.ratio, quant=ix.quant,  # noqa: E731
                                  score_rounding=ix.score_rounding, fp8_mma=ix.fp8_mma)
    else:
        fn = lambda: indexer_topk(q, w, k, ix.topk, spec.ratio, backend="torch", chunk=S,  # noqa: E731
                                  quant=ix.quant, score_rounding=ix.score_rounding, fp8_mma=ix.fp8_mma)
    rec["peak_gib"] = peak_above(fn)
    rec["median_ms"] = time_ms(fn)
    rec["tflops"] = rec["flop"] / (rec["median_ms"] * 1e-3) / 1e12
    if path == "triton" and spec.name in ("v4-flash", "v4-flash-bf16") and S in STREAMINDEX_H200_MS:
        rec["streamindex_h200_ms"] = STREAMINDEX_H200_MS[S]
    if path == "triton":
        rec.update(_indexer_breakdown(spec, q, w, k))


def _indexer_breakdown(spec: Pipeline, q, w, k) -> dict:
    """Where the indexer time goes: its program run with a sync after every call, per op."""
    ix = spec.indexer
    B, S = q.shape[:2]
    T = k.shape[1]
    chunk = min(S, default_chunk(T, defaults.INDEXER_SCORE_BUFFER, defaults.INDEXER_MIN_CHUNK))
    prog = compose_indexer(ix.heads, ix.dim, ix.topk, spec.ratio, B, S, chunk, "cuda", quant=ix.quant,
                           score_rounding=ix.score_rounding, fp8_mma=ix.fp8_mma)
    inputs = {"idx_q": q, "idx_w": w, "idx_k": k}
    interpreter.execute(prog, inputs, q.device)                 # warm-up
    prof: Dict[str, float] = {}
    interpreter.execute(prog, inputs, q.device, profile=prof)
    t_score = prof.get("indexer.score", 0.0) + prof.get("indexer.score_fp8", 0.0)
    return {"score_ms": t_score, "select_ms": prof.get("indexer.select", 0.0), "chunk": chunk,
            "pack_keys_ms": prof.get("quant.pack_keys", 0.0), "pack_queries_ms": prof.get("quant.pack_queries", 0.0),
            "score_tflops": indexer_flops(spec, B, S) / max(t_score * 1e-3, 1e-12) / 1e12}


# ---------------------------------------------------------------------------------------
# attention
def attention_inputs(spec: Pipeline, n_queries: int, kv_rows: int, seed: int = 0, holes: float = 0.0):
    """q [1,n,H,D], kv [1,R,D], key lists [1,n,W+K] for timing: every slot valid (queries deep in a
    long sequence), a window of W consecutive raw rows, then K random compressed rows (V4), or K
    random rows (V3.2); `holes` sets that fraction of slots to -1."""
    a = spec.attention
    K, W = spec.indexer.topk, a.window
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, n_queries, a.heads, a.qk_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    kv = torch.randn(1, kv_rows, a.qk_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    if spec.compressor is not None:
        raw = kv_rows * spec.ratio // (spec.ratio + 1)        # R = S + S/m raw + compressed rows
        sel = torch.randint(raw, kv_rows, (n_queries, K), device="cuda", generator=g, dtype=torch.int32)
        start = torch.randint(0, max(1, raw - W + 1), (n_queries, 1), device="cuda", generator=g)
        win = (start + torch.arange(W, device="cuda")[None, :]).to(torch.int32)
        keys = torch.cat([win, sel], dim=-1)
    else:
        keys = torch.randint(0, kv_rows, (n_queries, K), device="cuda", generator=g, dtype=torch.int32)
    if holes > 0:
        keys = torch.where(torch.rand(keys.shape, device="cuda", generator=g) < holes, -1, keys)
    return q, kv, keys[None].contiguous()


def attention_calls(sets: Sequence[tuple], attention, sink: Optional[torch.Tensor] = None,
                    variant: Optional[str] = None) -> Callable[[], torch.Tensor]:
    """A function that runs the attention kernel once a call on the (q, kv, keys) sets in turn (attention_inputs),
    so that a call does not find the rows of the one before in L2."""
    i = [0]

    def fn():
        q, kv, keys = sets[i[0] % len(sets)]
        i[0] += 1
        return sparse_mla.sparse_mla_fwd(q, kv, keys, attention.softmax_scale, attention.v_dim, sink=sink,
                                         variant=variant)
    return fn


def bench_attention(spec: Pipeline, seqs: Sequence[int], kv_rows: Optional[int] = None,
                    variant: Optional[str] = None, progress: bool = True) -> List[dict]:
    """The attention kernel alone on random valid key lists; variant None: the kernel's default for the
    shape (sparse_mla.DEFAULT_VARIANT)."""
    if spec.indexer is None:
        raise SpecError(f"bench attention times random key lists of an indexer's width; {spec.name!r} is a "
                        f"{spec.layer.upper()} layer: `bench composed` reports its attention stage "
                        f"(attention_tflops, valid pairs only)")
    a = spec.attention
    recs = []
    bar = _bar(len(seqs), f"attention {spec.name}", progress)
    for S in seqs:
        rec = base_record("attention", spec, 1, S, f"tilelang-{variant or sparse_mla.DEFAULT_VARIANT}")
        with reported(rec):
            R = kv_rows or (max(32768, S) if spec.compressor is None else S + S // spec.ratio)
            sets = [attention_inputs(spec, S, R, seed=i) for i in range(2)]
            sink = torch.randn(a.heads, device="cuda") if a.sink else None
            valid = int((sets[0][2] >= 0).sum())
            fn = attention_calls(sets, a, sink, variant)
            rec["peak_gib"] = peak_above(fn)
            rec["median_ms"] = time_ms(fn)
            rec["flop"] = attention_flop(a.heads, a.qk_dim, a.v_dim, valid)
            rec["tflops"] = rec["flop"] / (rec["median_ms"] * 1e-3) / 1e12
            rec["kv_rows"] = R
            rec["keys_per_query"] = int(sets[0][2].shape[-1])
            del sets
        recs.append(rec)
        bar.update(1)
    bar.close()
    return recs


# ---------------------------------------------------------------------------------------
# composed forward
def bench_composed(spec: Pipeline, seqs: Sequence[int], batch: int = 1, paths=("composed",),
                   budget: Optional[int] = None, progress: bool = True, profile: bool = True) -> List[dict]:
    recs = []
    bar = _bar(len(seqs) * len(paths), f"composed {spec.name}", progress)
    for S in seqs:
        inputs = None
        for path in paths:
            rec = base_record("composed", spec, batch, S, path)
            with reported(rec):
                fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path=path, memory_budget=budget))
                prog = fwd.plan(S, batch)
                rec["query_chunk"] = prog.chunk
                rec["planned_peak_gib"] = prog.peak_bytes / 2**30
                if inputs is None:
                    inputs = random_inputs(spec, batch, S, "cuda", seed=S)
                    rec["seed"] = S
                out_b = output_bytes(spec, batch, S)
                result = {}

                def fn():   # one output alive at a time
                    result.pop("out", None)
                    result["out"] = fwd.execute(prog, **inputs)
                rec["peak_gib"] = peak_above(fn, extra_baseline=out_b)
                rec["median_ms"] = time_ms(fn)
                result.clear()
                if path == "composed" and profile:
                    fwd.execute(prog, profile=True, **inputs)
                    rec["stage_ms"] = {k: round(v, 3) for k, v in fwd.last_profile.items()}
                    rec.update(attention_stage_numbers(spec, batch, S, rec["stage_ms"]))
                if path == "composed" and isinstance(spec.indexer, SelfIndex):
                    rec.update(selfindex_recall(spec, fwd, inputs))
                if spec.name in ("v4-flash", "v4-flash-bf16") and S == STREAMINDEX_H200_COMPOSED["seq_len"]:
                    rec["streamindex_h200"] = STREAMINDEX_H200_COMPOSED
            recs.append(rec)
            bar.update(1)
        inputs = None       # freed before the next length's
        _free_cuda()
    bar.close()
    return recs


def bench_varlen(spec: Pipeline, lengths: Sequence[int], budget: Optional[int] = None, rounds: int = 3,
                 progress: bool = True) -> List[dict]:
    """A packed batch of `lengths` through fwd.varlen (one program, B = 1 over all tokens) against each
    distinct length as its own B = 1 run, timed in alternation (`rounds` rounds of packed, then every own
    length; medians over the rounds) so that clock drift falls on both alike. The packed record carries
    `own_runs_ms` (the sum over the sequences of their own runs' medians), `packed_over_own` (<= 1: not
    slower per token), `round_ratios` and `us_per_token`; each own-run record its `us_per_token` too."""
    lengths = [int(x) for x in lengths]
    N = sum(lengths)
    distinct = sorted({L for L in lengths if L > 0})
    fwd = compile_pipeline(spec, device="cuda", schedule=Schedule(path="composed", memory_budget=budget))
    rec = base_record("composed-varlen", spec, 1, N, "composed")
    rec.update(lengths=lengths, seed=N, rounds=rounds)
    own = {L: base_record("composed", spec, 1, L, "composed") for L in distinct}
    bar = _bar(rounds * (1 + len(distinct)) + 1, f"varlen {spec.name}", progress)
    with reported(rec):
        cu, packed = random_packed_inputs(spec, lengths, "cuda", seed=N)
        prog = fwd.plan(N, packed=Packed(len(lengths), max(lengths)))
        runs = {"packed": (prog, dict(packed, cu_seqlens=cu), output_bytes(spec, 1, N))}
        for L in distinct:
            runs[L] = (fwd.plan(L), random_inputs(spec, 1, L, "cuda", seed=L), output_bytes(spec, 1, L))
        times: Dict[object, List[float]] = {k: [] for k in runs}
        result = {}

        def call(key):
            program, inputs, _ = runs[key]

            def fn():   # one output alive at a time; a packed program's max_seqlen: no host sync
                result.pop("out", None)
                result["out"] = fwd.execute(program, **inputs)
            return fn
        for key, r in zip(runs, [rec] + [own[L] for L in distinct]):
            result.clear()      # the previous run's output is not this run's baseline
            r["peak_gib"] = peak_above(call(key), extra_baseline=runs[key][2])
            r["query_chunk"] = runs[key][0].chunk
            r["planned_peak_gib"] = runs[key][0].peak_bytes / 2**30
        bar.update(1)
        for _ in range(rounds):
            for key in runs:
                times[key].append(time_ms(call(key)))
                bar.update(1)
        result.clear()
        for key, r in zip(runs, [rec] + [own[L] for L in distinct]):
            r["median_ms"] = float(sorted(times[key])[len(times[key]) // 2])
            r["us_per_token"] = r["median_ms"] * 1e3 / r["seq_len"]
            fwd.execute(runs[key][0], profile=True, **runs[key][1])
            r["stage_ms"] = {k: round(v, 3) for k, v in fwd.last_profile.items()}
        rec["own_runs_ms"] = sum(own[L]["median_ms"] for L in lengths if L > 0)
        rec["packed_over_own"] = rec["median_ms"] / rec["own_runs_ms"]
        rec["round_ratios"] = [t / sum(times[L][i] for L in lengths if L > 0) for i, t in enumerate(times["packed"])]
        runs.clear()
        del cu, packed
    bar.close()
    return [rec] + [own[L] for L in distinct]


def selfindex_recall(spec: Pipeline, fwd, inputs: dict, rows: int = 256) -> dict:
    """The self-index's quality: recall of its selection against the exact top-k of the full-precision
    head-summed logit qbar_s . K_t (docs/semantics.md section 7) over the compressed rows the program
    attends, on the last `rows` queries of batch row 0 (they see the most rows)."""
    S = inputs["q"].shape[1]
    _, idx = fwd(**inputs, return_indices=True)
    c = spec.compressor
    cos, sin = (t.contiguous() for t in cos_sin(rotary(c.rope), torch.arange(S, device=inputs["q"].device)))
    keys = compress_rows(inputs["cmp_kv"][:1], inputs["cmp_gate"][:1], inputs["cmp_ape"], inputs["cmp_norm"],
                         **compressor_params(c), **role_quant(spec, "cmp"), cos=cos, sin=sin)[0].float()
    s0, W, K = S - rows, spec.attention.window, spec.topk_eff(S)
    exact = inputs["q"][0, s0:].float().sum(1) @ keys.T                      # [rows, T]
    pos = torch.arange(s0, S, device=exact.device)
    invisible = torch.arange(keys.shape[0], device=exact.device)[None, :] >= ((pos + 1) // spec.ratio)[:, None]
    exact = exact.masked_fill(invisible, float("-inf"))
    want = exact.topk(K, dim=-1).indices
    got = idx[0, s0:, W:].long() - S
    hits = (got[:, :, None] == want[:, None, :]).any(-1).sum().item()
    del idx
    return {"selfindex_recall": hits / (rows * K), "selfindex_recall_rows": f"last {rows} queries, top-{K}, "
            "against the exact top-k of qbar . K in fp32"}


def attention_stage_numbers(spec: Pipeline, batch: int, seq_len: int, stage_ms: dict) -> dict:
    """The attention stage's useful work (valid pairs only, as the causal bound walks them) and rate."""
    a = spec.attention
    pairs = batch * attended_pairs(seq_len, a.window, spec.topk_eff(seq_len),
                                   spec.ratio if spec.layer != "window" else 0)
    flop = attention_flop(a.heads, a.qk_dim, a.v_dim, pairs)
    ms = stage_ms.get("attention.attend")
    return {"attention_pairs": pairs, "attention_flop": flop,
            "attention_tflops": flop / (ms * 1e-3) / 1e12 if ms else None}


def bench_model(model: str, seqs: Sequence[int], batch: int = 1, budget: Optional[int] = None,
                progress: bool = True) -> List[dict]:
    """A model's attention prefill: each distinct layer kind of model_layers(model) timed once (composed),
    then the whole model's attention as the sum over its layers (each kind's time times its count)."""
    layers = model_layers(model)
    counts: Dict[str, int] = {}
    kinds: Dict[str, Pipeline] = {}
    for p in layers:
        counts[p.name] = counts.get(p.name, 0) + 1
        kinds[p.name] = p
    recs = []
    for S in seqs:
        per_kind = []
        for name, spec in kinds.items():
            rec = bench_composed(spec, [S], batch, ("composed",), budget=budget, progress=progress)[0]
            rec.update(bench="model-layer", model=model, layer=spec.layer, layer_count=counts[name])
            per_kind.append(rec)
        total = base_record("model", kinds[layers[0].name], batch, S, "composed")
        total.update(preset=model, model=model, layers=len(layers), layer_counts=counts,
                     note="whole-model attention prefill = sum over layer kinds of (one layer's median x its count); "
                          "each kind was timed once")
        ok = all(r["status"] == "ok" for r in per_kind)
        total["status"] = "ok" if ok else "incomplete: " + ", ".join(f"{r['preset']} {r['status']}" for r in per_kind
                                                                     if r["status"] != "ok")
        total["median_ms"] = sum(r["median_ms"] * counts[r["preset"]] for r in per_kind) if ok else None
        total["peak_gib"] = max((r["peak_gib"] or 0) for r in per_kind) if ok else None
        recs += per_kind + [total]
    return recs


def cp_records(spec: Pipeline, seq_len: int, nproc: int, batch: int, per_rank: List[dict]) -> List[dict]:
    """One record of a context-parallel run (the slowest rank's time), the per-rank figures inside."""
    rec = base_record("composed", spec, batch, seq_len, "composed-cp")
    rec.update(nproc=nproc, median_ms=max(r["median_ms"] for r in per_rank), per_rank=per_rank,
               comm_ms=max(r["comm_ms"] for r in per_rank), comm_bytes=sum(r["comm_bytes"] for r in per_rank),
               peak_gib=max((r["peak_gib"] or 0) for r in per_rank) if per_rank[0]["peak_gib"] is not None else None,
               device=per_rank[0]["device"])
    return [rec]


def rank_table(per_rank: List[dict]) -> str:
    rows = [f"{'rank':>4} {'tokens':>9} {'ms':>10} {'comm ms':>9} {'comm MiB':>9} {'peak GiB':>9}  blocks"]
    for r in per_rank:
        pk = f"{r['peak_gib']:.3f}" if r["peak_gib"] is not None else "-"
        rows.append(f"{r['rank']:>4} {r['tokens']:>9,} {r['median_ms']:>10.2f} {r['comm_ms']:>9.2f} "
                    f"{r['comm_bytes'] / 2**20:>9.2f} {pk:>9}  {r['blocks']}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------
# output
def write_json(recs: List[dict], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(recs, f, indent=1, default=float)


def table(recs: List[dict]) -> str:
    """One line per record; TFLOP/s is the kernel's (indexer, attention) or, for a composed forward,
    its attention stage's (valid pairs only); xN: a model layer kind's count."""
    rows = [f"{'bench':<12} {'preset':<13} {'path':<12} {'S':>9} {'ms':>10} {'peak GiB':>9} {'TFLOP/s':>8}  status"]
    for r in recs:
        ms = f"{r['median_ms']:.2f}" if r.get("median_ms") is not None else "-"
        pk = f"{r['peak_gib']:.3f}" if r.get("peak_gib") is not None else "-"
        rate = r.get("tflops") if r.get("tflops") is not None else r.get("attention_tflops")
        tf = f"{rate:.0f}" if rate is not None else "-"
        bench = r["bench"] + (f" x{r['layer_count']}" if r.get("layer_count") else "")
        rows.append(f"{bench:<12} {r['preset']:<13} {r['path']:<12} {r['seq_len']:>9,} {ms:>10} {pk:>9} "
                    f"{tf:>8}  {str(r['status'])[:60]}")
    return "\n".join(rows)


def plot(recs: List[dict], path: str, title: str = "") -> Optional[str]:
    """Log-log time and peak memory against S, one line per path; OOM marked with x at the top."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path in sorted({r["path"] for r in recs}):
        rs = sorted((r for r in recs if r["path"] == path), key=lambda r: r["seq_len"])
        ok = [r for r in rs if r["status"] == "ok"]
        if ok:
            ax1.plot([r["seq_len"] for r in ok], [r["median_ms"] for r in ok], "o-", label=path)
            ax2.plot([r["seq_len"] for r in ok], [max(r["peak_gib"], 1e-3) for r in ok], "o-", label=path)
        bad = [r for r in rs if r["status"] == "oom"]
        for r in bad:
            ax1.annotate("OOM", (r["seq_len"], ax1.get_ylim()[1] if ok else 1), color="red", fontsize=8)
    ref = [r for r in recs if r.get("streamindex_h200_ms")]
    if ref:
        ax1.plot([r["seq_len"] for r in ref], [r["streamindex_h200_ms"] for r in ref], "s--", color="gray",
                 label="StreamIndex (H200, published)")
    for ax, yl in ((ax1, "median ms"), (ax2, "peak GiB above inputs")):
        loglog_axes(ax, "sequence length S", yl)
    fig.suptitle(title or f"{recs[0]['bench']} {recs[0]['preset']} on {recs[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loglog_axes(ax, xlabel: str, ylabel: str) -> None:
    """The axes every scaling plot uses: log2 S against log time or memory."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, show: bool = True):
    """A tqdm bar, or one that shows nothing (progress off, or tqdm missing)."""
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False)
