# key-space bisections in the selection: A/B base (HEAD) vs new (working tree), alternating; then indexer GPU tests on new
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
NEW=$PWD
mkdir -p $OUT/ab $OUT/pytest
export CSA_COMMIT=$1 AB_LIGHT=1 EARLY=1
for t in ${TREES:-base new base new}; do
  if [ $t = new ]; then T=$NEW; else T=$PWD/out/ab/$t; fi
  PYTHONPATH=$T:$NEW/benchmarks:$NEW/tests:$P0 timeout ${TLIM:-130} python out/ab/ab_sel.py $OUT/ab $t 2>&1 | grep -v "^{\|Warning\|read before\|-->\|Initialize\|^ *\[\|INFO" | tail -9
done
if [ -n "$TESTS" ]; then
PYTHONPATH=$NEW:$NEW/benchmarks:$NEW/tests:$P0 timeout ${PLIM:-150} python -m pytest -q -m gpu $TESTS --junitxml=$OUT/pytest/$2.xml 2>&1 | tail -3
fi
