"""A/B of the score kernel's store: the gpu_select_check forwards (digests + medians) on the tree on PYTHONPATH,
with SCORE_FP8_MAXNREG from CAP (env) when set. argv: OUT_DIR TAG."""
import json, os, sys
import torch
from kernels_triton.indexer import kernel as K
if os.environ.get("CAP"):
    K.SCORE_FP8_MAXNREG = int(os.environ["CAP"])
import gpu_select_check as g
from gpu_overlap_check import forward_case, indexer_case
from csa_dsl.benchmarks import base_record
from pipeline.lang.presets import preset
out_dir, tag = sys.argv[1], sys.argv[2]
cases = [lambda: g.timed(forward_case("v4-flash 262144", "v4-flash", 262144, g.DEFAULT)),
         lambda: g.timed(indexer_case("v4-flash", 262144, g.DEFAULT)),
         lambda: g.timed(forward_case("v4-flash packed 4x65536", "v4-flash", 262144, g.DEFAULT, lengths=[65536] * 4)),
         lambda: g.timed(forward_case("v4-flash 65536", "v4-flash", 65536, g.DEFAULT)),
         lambda: g.timed(forward_case("v3.2 131072", "v3.2", 131072, g.DEFAULT))]
recs = []
for mk in cases:
    try:
        rec = mk()
    except Exception as e:
        rec = {"case": "?", "status": f"error: {type(e).__name__}: {str(e)[:300]}"}
    rec = dict(base_record("store-check", preset("v4-flash"), 1, 0, "composed"), tree=tag,
               score_fp8_maxnreg=K.SCORE_FP8_MAXNREG, **rec)
    recs.append(rec)
    json.dump(recs, open(os.path.join(out_dir, f"store-check-{tag}.json"), "w"), indent=1)
    torch.cuda.empty_cache()
for r in recs:
    print(f"{tag:<10} {r['case']:<28} {r.get('median_ms', float('nan')):9.2f} ms  {r.get('digest')}")
