# the threshold's bisection with an early stop (treeE, TAU_SLACK) against HEAD, alternating
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl; unset TRITON_INTERPRET; P0=$PYTHONPATH
NEW=$PWD
mkdir -p $OUT/ab
export CSA_COMMIT=$1 AB_LIGHT=1 EARLY=1
for r in 1 2; do
for v in new:8 E8:8 E4:4; do
  IFS=: read t a <<< "$v"
  if [ $t = new ]; then T=$NEW; else T=$PWD/out/ab/treeE; fi
  env TRITON_CACHE_DIR=$PWD/.cache/tr-$t TAU_SLACK=$a PYTHONPATH=$T:$NEW/benchmarks:$NEW/tests:$P0 timeout 150 python out/ab/ab_sel.py $OUT/ab $t 2>&1 | grep -v "^{\|Warning\|read before\|-->\|Initialize\|^ *\[\|^kernel from\|TileLang" | tail -9
done
done
