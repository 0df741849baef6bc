"""The compressor kernel's IR for a GPU target, on any machine."""
from __future__ import annotations

import functools
import json
from typing import Optional

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .._env import compile_ir_elsewhere, kernels_interpreted
from .kernel import _compress_kernel, _constexprs, check_config, kernel_limits


def compile_ir(dim: int = 512, ratio: int = 4, overlap: bool = True, hadamard: bool = False, rope_dim: int = 64,
               arch: int = 90, config: Optional[dict] = None, quant_format: Optional[str] = None,
               quant_block: int = 0, quant_channels: int = 0, varlen: bool = False) -> dict:
    """Compile the compressor kernel for GPUTarget('cuda', arch, 32): {ttir, ttgir, llir, ptx} (`varlen`:
    the packed-batch variant, which reads each row's segment).

    Compiled once per process and argument set (the cached dict is returned; do not mutate it)."""
    return _compile_ir(dim, ratio, overlap, hadamard, rope_dim, arch, json.dumps(config, sort_keys=True),
                       quant_format, quant_block, quant_channels, varlen)


@functools.lru_cache(maxsize=None)
def _compile_ir(dim: int, ratio: int, overlap: bool, hadamard: bool, rope_dim: int, arch: int,
                config_json: str, quant_format: Optional[str], quant_block: int, quant_channels: int,
                varlen: bool) -> dict:
    config = json.loads(config_json)
    why = kernel_limits(dim, ratio, hadamard)
    if why is not None:
        raise ValueError(why)
    if kernels_interpreted(_compress_kernel):
        return compile_ir_elsewhere("kernels_triton.compressor.ir", dict(dim=dim, ratio=ratio, overlap=overlap,
                                                                         hadamard=hadamard, rope_dim=rope_dim,
                                                                         arch=arch, config=config,
                                                                         quant_format=quant_format,
                                                                         quant_block=quant_block,
                                                                         quant_channels=quant_channels,
                                                                         varlen=varlen))
    cfg = check_config(config, dim, ratio, overlap, hadamard)
    const = _constexprs(dim, ratio, overlap, hadamard, rope_dim, cfg, quant_format, quant_block, quant_channels,
                        varlen)
    sig = {"v_ptr": "*fp32", "g_ptr": "*fp32", "ape_ptr": "*fp32", "norm_ptr": "*fp32", "cos_ptr": "*fp32",
           "sin_ptr": "*fp32", "out_ptr": "*bf16", "rseg_ptr": "*i32", "S": "i32", "row_start": "i32", "n_rows": "i32",
           "pos0": "i32", "stride_ob": "i64", "stride_or": "i32", "eps": "fp32"}
    sig.update({k: "constexpr" for k in const})
    # what a launch at preset sizes specializes: 16-byte aligned pointers, S and strides % 16 == 0
    names = _compress_kernel.arg_names
    div16 = ("v_ptr", "g_ptr", "ape_ptr", "norm_ptr", "cos_ptr", "sin_ptr", "out_ptr", "S", "stride_ob", "stride_or")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in div16}
    src = ASTSource(fn=_compress_kernel, signature=sig, constexprs=const, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": cfg["num_warps"], "enable_fp_fusion": False})
    return {lvl: compiled.asm[lvl] for lvl in ("ttir", "ttgir", "llir", "ptx") if lvl in compiled.asm}
