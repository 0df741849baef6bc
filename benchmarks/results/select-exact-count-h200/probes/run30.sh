# GPU tests (FILES) at commit $1 with a junit record each, then optionally a bench check script (CHECK)
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH
export PYTHONPATH=$PWD:$PWD/benchmarks:$PWD/tests:$P0 CSA_COMMIT=$1
mkdir -p $OUT/pytest $OUT/check
for f in $FILES; do
  b=$(basename $f .py)
  timeout ${PLIM:-400} python -m pytest -q -m gpu $f --junitxml=$OUT/pytest/$b-$1.xml > $OUT/pytest/$b-$1.log 2>&1; echo "$b rc $? $(tail -1 $OUT/pytest/$b-$1.log)"
done
if [ -n "$CHECK" ]; then
  timeout ${CLIM:-300} python $CHECK $OUT/check $1 > $OUT/check/$(basename $CHECK .py)-$1.log 2>&1; echo "check rc $?"; tail -${TAILN:-14} $OUT/check/$(basename $CHECK .py)-$1.log | cut -c1-200
fi
