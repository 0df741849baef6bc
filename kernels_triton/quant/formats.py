"""The number formats of the quantisation steps, as plain numbers (docs/semantics.md section 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Format:
    """A small float grid: `mant` mantissa bits, normal exponents from `min_exp` (subnormals below),
    largest value `qmax`; a block's scale is 2^ceil(log2(max(amax, amax_floor) / qmax))."""

    name: str
    qmax: float
    mant: int
    min_exp: int
    amax_floor: float

    @property
    def qmax_exp(self) -> int:
        """e of qmax = (1 + f) * 2^e."""
        return math.frexp(self.qmax)[1] - 1

    @property
    def qmax_mant_bits(self) -> int:
        """The 23 fp32 mantissa bits of qmax (f * 2^23)."""
        return int((self.qmax / 2.0 ** self.qmax_exp - 1.0) * 2 ** 23)


E4M3 = Format("e4m3", qmax=448.0, mant=3, min_exp=-6, amax_floor=1e-4)
E2M1 = Format("e2m1", qmax=6.0, mant=1, min_exp=0, amax_floor=6.0 * 2.0 ** -126)
FORMATS = {f.name: f for f in (E4M3, E2M1)}

# the FP8 packing of rows for the score kernel: a row's scale exponent is floored here, so that
# 2^-e stays a normal fp32 (rows below it are zero to fp32 precision anyway)
PACK_AMAX_FLOOR = 2.0 ** -118


def get(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown quantisation format {name!r}; valid: {', '.join(FORMATS)}") from None


# The MMA operand dtype of each format's packed values (the score kernel multiplies e4m3 grid values
# in it). FP4 (e2m1) values times power-of-two block scales multiply exactly in an FP8 wgmma, and
# their products (<= 4 significant bits) summed without loss in its accumulator on every input we
# measured (recall 1.0 against fp64 at S = 32,768). FP8 (e4m3) products carry 8 significant bits
# and a 128-term dot needs up to 25: Hopper's FP8 wgmma accumulates with fewer bits than fp32
# (DeepSeek-V3 report: about 14; measured recall 0.9999 against fp64 on V3.2 shapes), so those
# values multiply as bf16 (exact) with fp32 accumulation.
MMA_DTYPE = {"e2m1": torch.float8_e4m3fn, "e4m3": torch.bfloat16}


def keys_dtype(fmt: str, fp8_mma: bool = False) -> torch.dtype:
    """The dtype of a format's packed keys on the GPU (MMA_DTYPE); `fp8_mma` (Indexer.fp8_mma): e4m3 values as
    FP8 too, multiplied on FP8 tensor cores with their accumulator's rounding."""
    get(fmt)
    return torch.float8_e4m3fn if fp8_mma else MMA_DTYPE[fmt]
