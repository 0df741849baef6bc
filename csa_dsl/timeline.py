"""Where a forward's milliseconds go on the GPU's own clock: the kernels of one call, from a CUDA trace
(torch.profiler, CUPTI), grouped by stage and cut into the spans where each set of stages runs at once.

A kernel is (name, stream, start_us, end_us). `summary` gives the call's span, each stage's busy time (the
union of its kernels' intervals) and kernel time (their sum), and the time each combination of stages runs
at once: "score + select" is selection under the scores, "select" alone is what the selection adds to the
span. A kernel's interval runs from its first block's start to its last block's end, so a kernel that waits
for room on the SMs (its blocks pending behind another kernel's) counts as running beside it: read a
combination together with the kernels' own times. `benchmarks/gpu_timeline.py` runs it on the forwards.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch

Kernel = Tuple[str, object, float, float]       # (name, stream, start_us, end_us)

# a kernel's stage, by a fragment of its name (first match wins; anything else is "other")
STAGES = (("_score_kernel", "score"), ("_score_gluon", "score"), ("_select_kernel", "select"),
          ("_keys_kernel", "select"), ("_pack_kernel", "quantise"), ("_rows_kernel", "quantise"),
          ("_compress_kernel", "compressor"), ("_rope_kernel", "rope"), ("sparse_mla", "attention"))
COLOURS = {"score": "tab:blue", "select": "tab:orange", "attention": "tab:green", "quantise": "tab:purple",
           "compressor": "tab:brown", "rope": "tab:pink", "other": "tab:gray"}


def stage_of(name: str) -> str:
    low = name.lower()
    for frag, stage in STAGES:
        if frag.lower() in low:
            return stage
    return "other"


def trace(fn: Callable[[], object], host: Optional[dict] = None) -> List[Kernel]:
    """The kernels one call of fn runs (after one warm-up call), sorted by start. `host` (a dict) receives
    the host side: each runtime/driver API's count, total and longest ms, the span of the launches, and per
    stage the median delay from a launch call to its kernel's start (near zero when the GPU waits for the
    host; tens of ms when the host is that far ahead)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    finally:
        os.unlink(path)
    return kernels_of(events, host)


def kernels_of(events: List[dict], host: Optional[dict] = None) -> List[Kernel]:
    """The kernels of a Chrome trace's events (`trace`), and the host side into `host`."""
    out, api, launched, delays = [], {}, {}, defaultdict(list)
    for ev in events:
        if ev.get("cat") in ("cuda_runtime", "cuda_driver"):
            a = api.setdefault(ev["name"], [0, 0.0, 0.0])
            dur = float(ev.get("dur", 0)) / 1e3
            a[0], a[1], a[2] = a[0] + 1, a[1] + dur, max(a[2], dur)
            if "correlation" in ev.get("args", {}):
                launched[ev["args"]["correlation"]] = float(ev["ts"])
    for ev in events:
        if ev.get("cat") == "kernel":
            t0 = float(ev["ts"])
            out.append((ev["name"], ev.get("args", {}).get("stream", ev.get("tid")), t0, t0 + float(ev["dur"])))
            t_launch = launched.get(ev.get("args", {}).get("correlation"))
            if t_launch is not None:
                delays[stage_of(ev["name"])].append((t0 - t_launch) / 1e3)
    if host is not None and launched:
        host["api"] = {k: {"count": v[0], "total_ms": v[1], "max_ms": v[2]}
                       for k, v in sorted(api.items(), key=lambda kv: -kv[1][1])}
        host["launch_span_ms"] = (max(launched.values()) - min(launched.values())) / 1e3
        host["launch_to_start_ms"] = {st: {"median": sorted(d)[len(d) // 2], "min": min(d), "max": max(d)}
                                      for st, d in delays.items()}
    return sorted(out, key=lambda k: k[2])


def concurrent(ks: List[Kernel]) -> Dict[str, float]:
    """ms in each set of stages running at once ("(gap)": none), largest first: a sweep over the kernels'
    starts and ends, so the values add up to the span."""
    edges = []
    for name, _, t0, t1 in ks:
        edges += [(t0, 1, stage_of(name)), (t1, -1, stage_of(name))]
    edges.sort(key=lambda e: (e[0], e[1]))
    live: Dict[str, int] = defaultdict(int)
    spans: Dict[str, float] = defaultdict(float)
    last = None
    for t, d, st in edges:
        if last is not None and t > last:
            key = " + ".join(sorted(s for s, n in live.items() if n > 0)) or "(gap)"
            spans[key] += (t - last) / 1e3
        live[st] += d
        last = t
    return dict(sorted(spans.items(), key=lambda kv: -kv[1]))


def busy(ks: List[Kernel]) -> Dict[str, float]:
    """ms each stage has at least one kernel running (the union of its kernels' intervals)."""
    by_stage: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    for name, _, t0, t1 in ks:
        by_stage[stage_of(name)].append((t0, t1))
    out = {}
    for st, iv in by_stage.items():
        total, end = 0.0, None
        for t0, t1 in sorted(iv):
            if end is None or t0 > end:
                total, end = total + (t1 - t0), t1
            elif t1 > end:
                total, end = total + (t1 - end), t1
        out[st] = total / 1e3
    return out


def summary(ks: List[Kernel]) -> dict:
    kernel_ms: Dict[str, float] = defaultdict(float)
    launches: Dict[str, int] = defaultdict(int)
    names: Dict[str, set] = defaultdict(set)
    for name, _, t0, t1 in ks:
        st = stage_of(name)
        kernel_ms[st] += (t1 - t0) / 1e3
        launches[st] += 1
        names[st].add(name[:80])
    return {"span_ms": (max(k[3] for k in ks) - min(k[2] for k in ks)) / 1e3 if ks else 0.0,
            "busy_ms": busy(ks), "kernel_ms": dict(kernel_ms), "launches": dict(launches),
            "concurrent_ms": concurrent(ks), "kernel_names": {st: sorted(n) for st, n in names.items()}}


def gantt(ks: List[Kernel], path: str, title: str, window_ms: float = 12.0) -> Optional[str]:
    """The kernels of the middle `window_ms` of the call, one row a stream, coloured by stage (None without
    matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t_first, t_last = min(k[2] for k in ks), max(k[3] for k in ks)
    mid = (t_first + t_last) / 2
    lo, hi = mid - window_ms * 500, mid + window_ms * 500
    streams = sorted({k[1] for k in ks}, key=str)
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.6 * len(streams)))
    for name, s, t0, t1 in ks:
        if t1 >= lo and t0 <= hi:
            ax.broken_barh([((t0 - t_first) / 1e3, (t1 - t0) / 1e3)], (streams.index(s) - 0.4, 0.8),
                           color=COLOURS[stage_of(name)])
    ax.set_yticks(range(len(streams)), [f"stream {s}" for s in streams])
    ax.set_xlim((lo - t_first) / 1e3, (hi - t_first) / 1e3)
    ax.set_xlabel("ms from the call's first kernel")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c, label=s) for s, c in COLOURS.items()],
              ncol=len(COLOURS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
