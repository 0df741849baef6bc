#!/usr/bin/env bash
# The quantisation work on a GPU (issue: FP8/FP4 steps + FP8 score kernel), as a user runs it:
#   bash benchmarks/gpu_quant_check.sh OUT_DIR
# the GPU tests of the quantisation, then the indexer and the composed forward at S = 262,144 with the
# steps on (v4-flash) and off (v4-flash-bf16), and v3.2 at S = 131,072 (both). JSON records in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/quant}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
STEPS=${QUANT_STEPS:-"pytest bench"}
for s in $STEPS; do
  case $s in
    pytest)
      python -m pytest -q -m gpu tests/test_quant_gpu.py tests/test_indexer_gpu.py tests/test_composed_gpu.py \
        -k "bitwise or fp8 or recall or 16k" --junitxml="$OUT/pytest-quant.xml" 2>&1 | tail -25 ;;
    bench)
      for p in v4-flash v4-flash-bf16; do
        python -m csa_dsl bench indexer --preset $p --seq 262144 --path triton --json "$OUT/bench-indexer-$p.json"
        python -m csa_dsl bench composed --preset $p --seq 262144 --path composed --json "$OUT/bench-composed-$p.json"
      done
      for p in v3.2 v3.2-bf16; do
        python -m csa_dsl bench composed --preset $p --seq 131072 --path composed --json "$OUT/bench-composed-$p.json"
      done ;;
  esac
done
python - "$OUT" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/bench-*.json")):
    for r in json.load(open(f)):
        print(f"{r['bench']:9s} {r['preset']:14s} S={r['seq_len']:>7,} {r.get('median_ms', float('nan')):9.1f} ms "
              f"peak {r.get('peak_gib', float('nan')):.3f} GiB  score {r.get('score_ms', '-')} select "
              f"{r.get('select_ms', '-')} {r.get('status', '')} {r.get('error', '')} {r.get('stage_ms', '')}")
PY
