"""Determinism of the selection under the score overlap: the v4-flash indexer at S = 262,144 (128 chunks),
one-stream once as the reference, then `RUNS` runs each of the overlapped and the one-stream program,
counting outputs that are not bit-identical to the reference:

    python benchmarks/gpu_select_race_check.py OUT.json [label [runs]]

Run it on a copy of the tree with the selection's read-back barrier deleted to see the race it closes
(docs/performance.md, "A race the overlap exposed")."""
import json
import sys

import torch

from csa_dsl.benchmarks import base_record, indexer_inputs
from kernels_triton.indexer.cost import default_chunk
from pipeline import interpreter
from pipeline.composer import compose_indexer
from pipeline.lang import defaults
from pipeline.lang.presets import preset

RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 12
S = 262144
spec = preset("v4-flash")
ix = spec.indexer
T = S // spec.ratio
inputs = indexer_inputs(spec, 1, S, seed=S)
chunk = min(S, default_chunk(T, defaults.INDEXER_SCORE_BUFFER, defaults.INDEXER_MIN_CHUNK))
progs = {ov: compose_indexer(ix.heads, ix.dim, ix.topk, spec.ratio, 1, S, chunk, "cuda", quant=ix.quant, overlap=ov)
         for ov in (False, True)}
run = lambda ov: interpreter.execute(progs[ov], inputs, torch.device("cuda"))["ids"]
ref = run(False)
rec = base_record("select-race-check", spec, 1, S, "composed")
rec.update(label=sys.argv[2] if len(sys.argv) > 2 else "", runs=RUNS, seed=S, chunk=chunk)
for ov, key in ((True, "overlap"), (False, "one_stream")):
    bad, rows = 0, 0
    for _ in range(RUNS):
        ids = run(ov)
        if not torch.equal(ids, ref):
            bad += 1
            rows += int((ids != ref).reshape(S, -1).any(1).sum())
    rec[f"{key}_runs_differing"] = bad
    rec[f"{key}_rows_differing"] = rows
json.dump(rec, open(sys.argv[1], "w"), indent=1)
print(rec["label"], {k: v for k, v in rec.items() if "differing" in k})
