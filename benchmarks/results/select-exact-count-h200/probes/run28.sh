# the smoke at commit $1: SMOKE_STEPS (default warm cli bench ir) into $OUT/s/smoke-$1
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
export PYTHONPATH=$PWD:$PWD/benchmarks:$PWD/tests:$P0 CSA_COMMIT=$1
mkdir -p $OUT/s
SMOKE_STEPS="${SMOKE_STEPS:-warm cli bench ir}" timeout ${SLIM:-540} bash benchmarks/gpu_smoke.sh $OUT/s/smoke-$1 > $OUT/s/smoke-$1.log 2>&1; echo smoke rc $?
grep -E "^=== |median|ms|GiB" $OUT/s/smoke-$1.log | grep -v "^\s*$" | tail -${TAILN:-40} | cut -c1-200
