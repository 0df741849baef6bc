"""Small @triton.jit helpers shared by the kernels."""
import triton
import triton.language as tl


@triton.jit
def round_bf16(x):
    """fp32 -> the nearest bf16 value (ties to even), kept as fp32 (exactly representable).

    Integer bit ops, not `.to(tl.bfloat16)`: the interpreter's fp32 -> bf16 cast truncates
    instead of rounding to nearest even; this is exactly RTNE on the interpreter and the GPU."""
    b = x.to(tl.int32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
    return tl.where(x != x, x, b.to(tl.float32, bitcast=True))    # NaN stays NaN
