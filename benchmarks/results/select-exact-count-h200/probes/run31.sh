# the smoke at commit $1 (SMOKE_STEPS, default warm cli bench), then the indexer GPU tests; the smoke dir tarred
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
export PYTHONPATH=$PWD:$PWD/benchmarks:$PWD/tests:$P0 CSA_COMMIT=$1
mkdir -p $OUT/s
SMOKE_STEPS="${SMOKE_STEPS:-warm cli bench}" timeout ${SLIM:-420} bash benchmarks/gpu_smoke.sh $OUT/s/smoke-$1 > $OUT/s/smoke-$1.log 2>&1; echo smoke rc $?
tr '\r' '\n' < $OUT/s/smoke-$1.log | grep -E "^=== |^time|peak memory" | cut -c1-110
timeout ${PLIM:-120} python -m pytest -q -m gpu tests/test_indexer_gpu.py --junitxml=$OUT/s/pytest-indexer-$1.xml > $OUT/s/pytest-indexer-$1.log 2>&1; echo "pytest rc $? $(tail -1 $OUT/s/pytest-indexer-$1.log)"
cd $OUT/s && tar czf smoke-$1.tgz smoke-$1 && rm -rf smoke-$1
