"""Probe: the score side stream at a higher CUDA priority than the caller's stream (select + attention)."""
import json, os, sys
import torch
from csa_dsl.benchmarks import time_ms
from gpu_overlap_check import forward_case, indexer_case, patched
from gpu_select_check import DEFAULT, digest
import gpu_timeline as TL
from csa_dsl import timeline
from pipeline import interpreter, streams

lo, hi = torch.cuda.Stream.priority_range()
print("priority range", lo, hi)


class PrioIssuer(streams.Issuer):
    PRIO = hi
    def __init__(self, program, device):
        super().__init__(program, device)
        self.side = {name: torch.cuda.Stream(device, priority=self.PRIO) for name in program.streams}
        for s in self.side.values():
            s.wait_stream(self.main)


class MainHigh(streams.Issuer):
    """The program's own calls (selection, attention) on a high-priority stream forked from the caller's."""
    def __init__(self, program, device):
        super().__init__(program, device)
        self.caller = self.main
        self.main = torch.cuda.Stream(device, priority=hi)
        self.main.wait_stream(self.caller)

    def join(self):
        super().join()
        self.caller.wait_stream(self.main)


VARIANTS = {"default": streams.Issuer, "score-high": PrioIssuer, "main-high": MainHigh}
out_dir = sys.argv[1]
cases = {"v4-flash": lambda: forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT),
         "indexer": lambda: indexer_case("v4-flash", 262144, DEFAULT),
         "packed": lambda: forward_case("v4-flash packed 4x65536", "v4-flash", 262144, DEFAULT, lengths=[65536] * 4),
         "v4-pro": lambda: forward_case("v4-pro 262144", "v4-pro", 262144, DEFAULT),
         "v3.2": lambda: forward_case("v3.2 131072", "v3.2", 131072, DEFAULT)}
res = []
for key in (sys.argv[2:] or list(cases)):
    case = cases[key]()
    call = TL.call_of(case)
    def out_of():
        r = call()
        return r["ids"] if isinstance(r, dict) else r
    rec = {"case": case[0], "ms": {v: [] for v in VARIANTS}, "digest": {}, "timeline": {}}
    for rnd in range(3):
        for var, cls in VARIANTS.items():
            with patched(interpreter, "Issuer", cls):
                if rnd == 0:
                    rec["digest"][var] = digest(out_of())
                rec["ms"][var].append(time_ms(out_of))
    with patched(interpreter, "Issuer", MainHigh):
        host = {}
        ks = timeline.trace(call, host)
        rec["timeline"]["main-high"] = timeline.summary(ks)
        timeline.gantt(ks, os.path.join(out_dir, f"mainhigh-{key}.png"), case[0] + ", selection + attention high priority")
    res.append(rec)
    json.dump(res, open(os.path.join(out_dir, "prio.json"), "w"), indent=1)
    del case, call
    torch.cuda.empty_cache()
for r in res:
    t = r["timeline"]["main-high"]
    print(r["case"], " | ".join(f"{v} " + ",".join(f"{x:.1f}" for x in r["ms"][v]) for v in VARIANTS),
          "same" if len(set(r["digest"].values())) == 1 else "DIFFER")
    print("   main-high at once: " + "; ".join(f"{s}: {v:.1f}" for s, v in list(t["concurrent_ms"].items())[:7]))
