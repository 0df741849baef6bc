# L2 prefetch variants of the selection (treeC, env PF_START / PF_AHEAD) against new, selection cases only
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl; unset TRITON_INTERPRET; P0=$PYTHONPATH
NEW=$PWD
mkdir -p $OUT/ab
export CSA_COMMIT=$1 SEL_ONLY=1
for r in 1 2; do
for v in new:0:0 C1:8192:0 C2:0:2 C3:8192:2 C4:16384:4; do
  IFS=: read t a b <<< "$v"
  if [ $t = new ]; then T=$NEW; else T=$PWD/out/ab/treeC; fi
  TRITON_CACHE_DIR=$PWD/.cache/tr-$t PF_START=$a PF_AHEAD=$b PYTHONPATH=$T:$NEW/benchmarks:$NEW/tests:$P0 timeout 100 python out/ab/ab_sel.py $OUT/ab $t 2>&1 | grep -v "^{\|Warning\|read before\|-->\|Initialize\|^ *\[\|^kernel from" | tail -4
done
done
