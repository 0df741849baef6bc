# register caps of the selection after the votes (treeD reads SEL_CAP_<topk>), selection cases only
source .gpu/activate; export TILELANG_CACHE_DIR=$PWD/.cache/tl; unset TRITON_INTERPRET; P0=$PYTHONPATH
NEW=$PWD
mkdir -p $OUT/ab
export CSA_COMMIT=$1 SEL_ONLY=1
for r in 1 2; do
for v in new:64:64:0 P1:48:56:48 P2:40:48:64; do
  IFS=: read t a b c <<< "$v"
  if [ $t = new ]; then T=$NEW; else T=$PWD/out/ab/treeD; fi
  env TRITON_CACHE_DIR=$PWD/.cache/tr-$t SEL_CAP_2048=$a SEL_CAP_1024=$b SEL_CAP_512=$c PYTHONPATH=$T:$NEW/benchmarks:$NEW/tests:$P0 timeout 100 python out/ab/ab_sel.py $OUT/ab $t 2>&1 | grep -v "^{\|Warning\|read before\|-->\|Initialize\|^ *\[\|^kernel from" | tail -4
done
done
