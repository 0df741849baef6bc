# Nsight Compute on an early chunk's selection (v3.2: queries 8,192..10,239, top-2,048; v4-flash: 14,336..16,383)
source .gpu/activate; export TRITON_CACHE_DIR=$PWD/.cache/tr; unset TRITON_INTERPRET; P0=$PYTHONPATH; export PYTHONPATH=$PWD:$PWD/benchmarks:$PWD/tests:$P0
mkdir -p $OUT/ncu
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for c in "v3.2 10240" "v4-flash 16384"; do
  set -- $c; tag=select-$1-early
  timeout 150 $NCU --profile-from-start off --set full --import-source yes -o $OUT/ncu/$tag python benchmarks/ncu_one_launch.py select-$1-early > $OUT/ncu/$tag.log 2>&1; tail -1 $OUT/ncu/$tag.log
  $NCU --import $OUT/ncu/$tag.ncu-rep --page source --print-source sass --csv > $OUT/ncu/$tag-sass.csv 2>/dev/null
  $NCU --import $OUT/ncu/$tag.ncu-rep --page details --csv > $OUT/ncu/$tag-details.csv 2>/dev/null
  python benchmarks/ncu_stalls.py $OUT/ncu/$tag-sass.csv 30 > $OUT/ncu/$tag-stalls.txt 2>&1
  echo "== $tag"; head -45 $OUT/ncu/$tag-stalls.txt
  grep -E '"(Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Compute \(SM\) Throughput|DRAM Throughput|Issue Slots Busy|L2 Hit Rate)"' $OUT/ncu/$tag-details.csv | cut -c1-160
  gzip $OUT/ncu/$tag-sass.csv; rm -f $OUT/ncu/$tag.ncu-rep
done
