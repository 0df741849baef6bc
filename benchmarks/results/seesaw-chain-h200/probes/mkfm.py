import sys
p = sys.argv[1]
s = open(p).read()
start = s.index("        for it in T.serial(n_it):\n            k = it * 2 + c\n            # additive mask of this consumer's block")
end = s.index("        # the denominator sums both consumers' blocks (sum_s")
new = open(sys.argv[2]).read()
s = s[:start] + new + s[end:]
a = """                 scale2, s_pos, n_it, b_i, s_i, h0, bound_w, R, P):"""
assert s.count(a) == 1
s = s.replace(a, a.replace("R, P):", "R, P, P_r):"))
a = "            lse1 = T.alloc_fragment([HB], f32)\n\n            bar_q = T.alloc_barrier(128)\n            bar_kv_full = T.alloc_barrier([128, 128])\n            bar_kv_free = T.alloc_barrier([256, 256])"
assert s.count(a) == 1
s = s.replace(a, a.replace("f32)\n\n", "f32)\n            P_r = T.alloc_fragment([HB, BI], bf16)\n\n"))
for tail in ("\n            elif tx < 256:", "\n            else:\n                # producer: the ws"):
    a = "bar_kv_free, bar_mx, bar_p, scale2, s_pos, n_it, b_i, s_i, h0, bound_w, R, P)" + tail
    assert s.count(a) == 1, tail
    s = s.replace(a, a.replace("R, P)", "R, P, P_r)"))
open(p, "w").write(s)
