# FlashMLA-order seesaw: GPU tests of the seesaw kernel on new, then A/B base vs new
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
NEW=$PWD
mkdir -p $OUT/ab $OUT/pytest
export CSA_COMMIT=$1
if [ -n "$TESTS" ]; then
PYTHONPATH=$NEW:$NEW/benchmarks:$NEW/tests:$P0 timeout ${PLIM:-200} python -m pytest -q -m gpu $TESTS --junitxml=$OUT/pytest/$2.xml 2>&1 | tail -${PTAIL:-6}
fi
for t in ${TREES:-base new}; do
  if [ $t = new ]; then T=$NEW; else T=$PWD/out/ab/$t; fi
  PYTHONPATH=$T:$NEW/benchmarks:$NEW/tests:$P0 timeout ${TLIM:-170} python out/ab/ab_attn.py $OUT/ab $t 2>&1 | grep -v "^{\|Warning\|read before\|-->\|Initialize\|^ *\[\|INFO" | tail -7
done
