# smoke at commit $1 within a short device budget: warm + cli, then the indexer GPU tests; files tarred
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
export PYTHONPATH=$PWD:$PWD/benchmarks:$PWD/tests:$P0 CSA_COMMIT=$1
mkdir -p $OUT/s
SMOKE_STEPS="warm cli" timeout ${SLIM:-300} bash benchmarks/gpu_smoke.sh $OUT/s/smoke-$1 > $OUT/s/smoke-$1.log 2>&1; echo smoke rc $?
tr '\r' '\n' < $OUT/s/smoke-$1.log | grep -E "^=== |^time|peak memory" | cut -c1-120
timeout ${PLIM:-100} python -m pytest -q -m gpu tests/test_indexer_gpu.py -x > $OUT/s/pytest-indexer-$1.log 2>&1; tail -1 $OUT/s/pytest-indexer-$1.log
cd $OUT/s && tar czf smoke-$1.tgz smoke-$1 && rm -rf smoke-$1
