"""The index queries packed once per chunk (quant.pack_queries) instead of in every score program, and a
register cap on the FP8 score kernel, on the same inputs in the same process:

    python benchmarks/gpu_prepack_check.py OUT_DIR [TAG]

Each case's variants differ only in the FP8 score kernel's register cap (indexer.kernel.SCORE_FP8_MAXNREG),
so every output must be bit-identical to the first variant's (checked after every run); variants run in
alternation (gpu_overlap_check.run_case: 3 rounds, medians). The same script run on a tree from before the
change (PYTHONPATH at that tree: the cap is then an unused attribute) gives the before figures on the same
seeded inputs. Writes OUT_DIR/prepack-check[-TAG].json and prints a table last."""
import os
import sys

import torch

from gpu_overlap_check import forward_case, indexer_case, run_all
from kernels_triton.indexer import kernel as score_kernel
from pipeline import interpreter


class Capped:
    """A compiled forward (or, fwd None, the standalone indexer's program) run with the FP8 score kernel's
    register cap set to `cap` for the call."""

    def __init__(self, fwd, cap):
        self.fwd, self.cap = fwd, cap

    def execute(self, prog, **inputs):
        score_kernel.SCORE_FP8_MAXNREG = self.cap
        if self.fwd is None:
            return interpreter.execute(prog, inputs, torch.device("cuda"))["ids"]
        return self.fwd.execute(prog, **inputs)


def capped(case, caps):
    """The case's first run under every cap in `caps` (labelled by it)."""
    name, spec, S, inputs, runs, out_b = case
    label, fwd, prog = runs[0]
    return name, spec, S, inputs, [(f"{label}, cap {c or 'none'}", Capped(fwd, c), prog) for c in caps], out_b


def main():
    """argv: OUT_DIR [TAG [CAPS]]; CAPS comma-separated register caps ('none' for ptxas's choice)."""
    out_dir = sys.argv[1]
    tag = f"-{sys.argv[2]}" if len(sys.argv) > 2 else ""
    caps = tuple(None if c == "none" else int(c) for c in (sys.argv[3] if len(sys.argv) > 3 else "none,224").split(","))
    ov = [("overlap", True, None)]
    cases = [lambda: capped(forward_case("v4-flash 262144", "v4-flash", 262144, ov), caps),
             lambda: capped(indexer_case("v4-flash", 262144, ov), caps),
             lambda: capped(forward_case("v4-flash packed 4x65536", "v4-flash", 262144, ov, lengths=[65536] * 4),
                            caps),
             lambda: capped(forward_case("v4-flash 65536", "v4-flash", 65536, ov), caps)]
    if len(sys.argv) <= 3:      # the default run: the other presets too, at ptxas's choice
        cases += [lambda: capped(forward_case("v3.2 131072", "v3.2", 131072, ov), (None,)),
                  lambda: capped(forward_case("v4-flash-bf16 262144", "v4-flash-bf16", 262144, ov), (None,))]
    run_all(cases, os.path.join(out_dir, f"prepack-check{tag}.json"), kind="prepack-check")


if __name__ == "__main__":
    main()
