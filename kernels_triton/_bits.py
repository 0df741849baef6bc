"""Small @triton.jit helpers shared by the kernels."""
import triton
import triton.language as tl


# The official index score's bf16 arithmetic (Indexer.score_rounding "bf16"), two values an instruction, as inline
# PTX for the Triton and the Gluon score kernels (on the GPU; the interpreter runs round_bf16 instead):
# - two fp32 values $2, $3 rounded to bf16 (one cvt.rn.bf16x2.f32, F2FP.PACK_AB: the cast x.to(bf16) is one
#   F2F.BF16.F32 a value, on the conversion unit's 16 lanes an SM, and made the score three times slower),
#   returned as fp32 in $0, $1 (a shift and a mask);
BF16X2_ROUND_PTX = tl.constexpr(
    "{ .reg .b32 t; cvt.rn.bf16x2.f32 t, $3, $2; shl.b32 $0, t, 16; and.b32 $1, t, 0xffff0000; }")
# - two terms bf16(ReLU(bf16(d)) * w) of fp32 dots $2, $3 and bf16 weights $4 (a bf16x2 pair): the dots rounded
#   as above, the ReLU one max.NaN.bf16x2 (NaN kept), the product one mul.rn.bf16x2, which rounds the exact
#   product of two bf16 values to nearest even as a bf16 product in PyTorch does.
BF16X2_TERMS_PTX = tl.constexpr("{ .reg .b32 t, z; mov.b32 z, 0; cvt.rn.bf16x2.f32 t, $3, $2; max.NaN.bf16x2 t, t, z; "
                                "mul.rn.bf16x2 t, t, $4; shl.b32 $0, t, 16; and.b32 $1, t, 0xffff0000; }")


@triton.jit
def round_bf16(x):
    """fp32 -> the nearest bf16 value (ties to even), kept as fp32 (exactly representable).

    Integer bit ops, not `.to(tl.bfloat16)`: the interpreter's fp32 -> bf16 cast truncates
    instead of rounding to nearest even; this is exactly RTNE on the interpreter and the GPU."""
    b = x.to(tl.int32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
    return tl.where(x != x, x, b.to(tl.float32, bitcast=True))    # NaN stays NaN
