"""Probe: a persistent selection (one program an SM, 64 registers) so that it runs beside the FP8 score."""
import contextlib, functools, json, os, sys
import torch
from csa_dsl.benchmarks import time_ms
from gpu_overlap_check import forward_case, indexer_case, patched
from gpu_select_check import DEFAULT, digest
import gpu_timeline as TL
from csa_dsl import timeline
from pipeline import interpreter, streams
from pipeline.stages import indexer as ix_stage
from kernels_triton.indexer import kernel as K

lo, hi = torch.cuda.Stream.priority_range()
SMS = torch.cuda.get_device_properties(0).multi_processor_count
IMPL = ix_stage.SELECT.impls["cuda"]
ORIG = IMPL.fn


class ScoreHigh(streams.Issuer):
    def __init__(self, program, device):
        super().__init__(program, device)
        self.side = {name: torch.cuda.Stream(device, priority=hi) for name in program.streams}
        for s in self.side.values():
            s.wait_stream(self.main)


class MainHigh(streams.Issuer):
    def __init__(self, program, device):
        super().__init__(program, device)
        self.caller = self.main
        self.main = torch.cuda.Stream(device, priority=hi)
        self.main.wait_stream(self.caller)

    def join(self):
        super().join()
        self.caller.wait_stream(self.main)


@contextlib.contextmanager
def variant(per_sm, issuer):
    @functools.wraps(ORIG)
    def sel(*a, **kw):
        if per_sm:
            kw["programs"] = SMS * per_sm
        return ORIG(*a, **kw)
    object.__setattr__(IMPL, "fn", sel)
    try:
        with patched(interpreter, "Issuer", issuer):
            yield
    finally:
        object.__setattr__(IMPL, "fn", ORIG)


VARIANTS = {"default": (0, streams.Issuer), "persist": (1, streams.Issuer), "persist+score-high": (1, ScoreHigh),
            "persist+main-high": (1, MainHigh), "persist2": (2, streams.Issuer)}
out_dir = sys.argv[1]
cases = {"v4-flash": lambda: forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT),
         "indexer": lambda: indexer_case("v4-flash", 262144, DEFAULT),
         "packed": lambda: forward_case("v4-flash packed 4x65536", "v4-flash", 262144, DEFAULT, lengths=[65536] * 4)}
res = []
for key in (sys.argv[2:] or list(cases)):
    case = cases[key]()
    call = TL.call_of(case)
    def out_of():
        r = call()
        return r["ids"] if isinstance(r, dict) else r
    rec = {"case": case[0], "ms": {v: [] for v in VARIANTS}, "digest": {}, "timeline": {}}
    for rnd in range(3):
        for var, (k, cls) in VARIANTS.items():
            with variant(k, cls):
                if rnd == 0:
                    rec["digest"][var] = digest(out_of())
                rec["ms"][var].append(time_ms(out_of))
    best = min((v for v in VARIANTS if v != "default"), key=lambda v: sorted(rec["ms"][v])[1])
    with variant(*VARIANTS[best]):
        ks = timeline.trace(call)
        rec["timeline"][best] = timeline.summary(ks)
        timeline.gantt(ks, os.path.join(out_dir, f"pers-{key}.png"), case[0] + ", " + best)
    res.append(rec)
    json.dump(res, open(os.path.join(out_dir, "pers.json"), "w"), indent=1)
    del case, call
    torch.cuda.empty_cache()
for r in res:
    print(r["case"], "same" if len(set(r["digest"].values())) == 1 else f"DIFFER {r['digest']}")
    for v in VARIANTS:
        print(f"   {v:<22} " + ", ".join(f"{x:.1f}" for x in r["ms"][v]))
    for b, t in r["timeline"].items():
        print(f"   {b} at once: " + "; ".join(f"{s}: {v:.1f}" for s, v in list(t["concurrent_ms"].items())[:7]))
