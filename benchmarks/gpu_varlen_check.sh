#!/usr/bin/env bash
# Packed batches, torch.compile and CUDA graphs on a GPU (issue: csa-dsl inside a model):
#   bash benchmarks/gpu_varlen_check.sh OUT_DIR
# 1. the attention kernels the checks use, compiled in parallel into TileLang's disk cache
# 2. python -m pytest -m gpu tests/test_varlen_gpu.py   (each packed sequence == its own run at 262,144
#    tokens, torch.compile fullgraph == eager, CUDA graphs of the padded and packed forward replay eager)
# 3. csa-dsl bench composed --varlen 65536,65536,65536,65536 (v4-flash): packed vs one sequence per token
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
RC=0
python -c "from kernels_tilelang.sparse_mla.kernel import precompile
r = precompile([(64, 512, 512, 640, True, False), (128, 576, 512, 2048, False, False),
                (64, 512, 512, 128 + 100000 // 128, True, False)], variants=('ws',))
r.update(precompile([(64, 512, 512, 256, True, False), (128, 576, 512, 2048, False, False)], variants=('ws-bounded',)))
print('precompiled', {k: v[1] for k, v in r.items()})" 2>&1 | tail -3
python -m pytest -m gpu tests/test_varlen_gpu.py -q -p no:cacheprovider -rA --junitxml="$OUT/pytest-varlen-gpu.xml" \
  > "$OUT/pytest-varlen-gpu.log" 2>&1 || RC=1
tail -15 "$OUT/pytest-varlen-gpu.log"
python -m csa_dsl bench composed --preset v4-flash --varlen 65536,65536,65536,65536 \
  --json "$OUT/composed-varlen-v4-flash.json" 2>&1 | tail -6 || RC=1
exit $RC
