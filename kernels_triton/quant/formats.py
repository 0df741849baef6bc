"""The number formats of the quantisation steps, as plain numbers (docs/semantics.md section 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass


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
