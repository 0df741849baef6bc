#!/usr/bin/env bash
# GPU smoke test: runs, on a GPU machine from a plain checkout, exactly what a user runs.
#
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]          (default OUT_DIR: benchmarks/results/smoke)
#   SMOKE_STEPS="cli bench ir pytest" bash benchmarks/gpu_smoke.sh OUT   (a subset, in that order)
#
# Steps:
#   warm    compile the preset attention kernels in parallel processes into TileLang's disk cache
#           (each later process then loads them in about a second)
#   cli     the README's main job `csa-dsl run v4-flash` (S = 262,144 on a GPU), the same with the official
#           code's bf16 index score (`--score-rounding bf16`), `csa-dsl run v4-flash-bf16` (the exact bf16
#           math), `csa-dsl run v4-pro --seq 262144`,
#           `csa-dsl run v3.2 --seq 131072` (and with `--fp8-mma`), a packed batch
#           `csa-dsl run v4-flash --varlen 70000,130000,62144`, each with --json
#   bench   one `csa-dsl bench` of each kind at a small S, and `bench model` (every V4-Flash layer kind
#           at S = 262,144)
#   ir      `csa-dsl ir PRESET --level all -o DIR` for every preset (PRESET_NAMES)
#   pytest  `python -m pytest -m gpu`
# Writes OUT_DIR/run-*.json (bench "run" records), OUT_DIR/bench-*.json, OUT_DIR/steps.json (every
# step's command, exit code and seconds) and the logs; exits non-zero when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/smoke}
mkdir -p "$OUT"
STEPS=${SMOKE_STEPS:-"warm cli bench ir pytest"}
# the installed console script, else the same CLI from the checkout
if command -v csa-dsl >/dev/null 2>&1; then CSA=(csa-dsl); else CSA=(python -m csa_dsl); fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
STEPS_JSON="$OUT/steps.jsonl"
: > "$STEPS_JSON"
FAILED=0

step() {   # step NAME CMD...: run, log to OUT/NAME.log, record rc and seconds
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@" > >(tee "$OUT/$name.log") 2> >(tee "$OUT/$name.err" >&2)
  local rc=$?
  local dt=$((SECONDS - t0))
  python -c 'import json, sys; print(json.dumps({"step": sys.argv[1], "cmd": sys.argv[2], "rc": int(sys.argv[3]),
                                                  "seconds": int(sys.argv[4])}))' "$name" "$*" "$rc" "$dt" >> "$STEPS_JSON"
  if [ "$rc" -ne 0 ]; then
    echo "=== $name FAILED (rc $rc)"
    FAILED=1
  fi
  return 0
}

for s in $STEPS; do
  case $s in
    warm)
      # every preset's program runs the seesaw split; the V4 presets' fuse the inverse RoPE of the last
      # 64 channels (rope = (448, 64, packed)); v3.2's 576-dim rows walk their causal bound
      step warm python -c "from kernels_tilelang.sparse_mla.kernel import precompile
rope, packed = (448, 64, False), (448, 64, True)
r = precompile([(64, 512, 512, 640, True, False, rope), (64, 512, 512, 640, True, False, packed),
                (128, 512, 512, 1152, True, False, rope), (64, 512, 512, 640, True, False)], variants=('seesaw',))
r.update(precompile([(128, 576, 512, 2048, False, False)], variants=('seesaw', 'seesaw-bounded')))
r.update(precompile([(64, 512, 512, 2176, True, False, rope)], variants=('seesaw-bounded',)))
r.update(precompile([(64, 512, 512, 256, True, False), (128, 512, 512, 256, True, False)],
                    variants=('seesaw',)))     # short HCA lists walk every block: kernel.SEESAW_BOUNDED_MIN_NI
r.update(precompile([(64, 512, 512, 128, True, False, rope)], variants=('seesaw-window',)))
bad = {k: v for k, v in r.items() if v[0]}
print('precompiled', len(r), 'kernels', {k: v[1] for k, v in r.items()})
raise SystemExit(1 if bad else 0)" ;;
    cli)
      step run-v4-flash "${CSA[@]}" run v4-flash --json "$OUT/run-v4-flash.json"
      step run-v4-flash-bf16-scores "${CSA[@]}" run v4-flash --score-rounding bf16 \
        --json "$OUT/run-v4-flash-bf16-scores.json"
      step run-v4-flash-bf16 "${CSA[@]}" run v4-flash-bf16 --json "$OUT/run-v4-flash-bf16.json"
      step run-v4-pro "${CSA[@]}" run v4-pro --seq 262144 --json "$OUT/run-v4-pro.json"
      step run-v3.2 "${CSA[@]}" run v3.2 --seq 131072 --json "$OUT/run-v3.2.json"
      step run-v3.2-fp8-mma "${CSA[@]}" run v3.2 --seq 131072 --fp8-mma --json "$OUT/run-v3.2-fp8-mma.json"
      step run-v4-flash-varlen "${CSA[@]}" run v4-flash --varlen 70000,130000,62144 \
        --json "$OUT/run-v4-flash-varlen.json" ;;
    bench)
      step bench-indexer "${CSA[@]}" bench indexer --preset v4-flash --seq 32768 --path triton \
        --json "$OUT/bench-indexer.json"
      step bench-attention "${CSA[@]}" bench attention --preset v4-flash --seq 4096 --json "$OUT/bench-attention.json"
      step bench-composed "${CSA[@]}" bench composed --preset v4-flash --seq 16384 --path composed,materialize \
        --json "$OUT/bench-composed.json"
      step bench-composed-varlen "${CSA[@]}" bench composed --preset v4-flash --varlen 65536,65536,65536,65536 \
        --json "$OUT/bench-composed-varlen.json"
      step bench-model "${CSA[@]}" bench model --preset v4-flash --seq 262144 --json "$OUT/bench-model.json" ;;
    ir)
      for p in $(python -c "from pipeline.lang.presets import PRESET_NAMES; print(*PRESET_NAMES)"); do
        step "ir-$p" "${CSA[@]}" ir "$p" --level all -o "$OUT/ir-$p"
      done ;;
    pytest)
      step pytest python -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml" ;;
    *) echo "unknown step $s (warm cli bench ir pytest)"; FAILED=1 ;;
  esac
done

python - "$STEPS_JSON" "$OUT/steps.json" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(f"{'step':<18} {'rc':>3} {'s':>5}")
for r in rows:
    print(f"{r['step']:<18} {r['rc']:>3} {r['seconds']:>5}")
PY
rm -f "$STEPS_JSON"
exit $FAILED
