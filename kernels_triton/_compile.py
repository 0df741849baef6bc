"""Compile a @triton.jit kernel for a GPU target on any machine (no GPU, no driver needed).

At launch, Triton's JIT specialises pointer and integer arguments that are
multiples of 16 (`tt.divisibility`), which is what lets it vectorise loads and
software-pipeline them with cp.async. The IR shown to users must be the IR that
runs, so the same hints are given here for the arguments our launchers always
pass 16-divisible (base pointers and row strides).
"""
from __future__ import annotations

from typing import Dict, Iterable

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource, GluonJITFunction

LEVELS = ("ttir", "ttgir", "llir", "ptx")


def compile_for_target(fn, signature: Dict[str, str], constexprs: Dict[str, object],
                       divisible: Iterable[str] = (), arch: int = 90, **options) -> Dict[str, str]:
    # the kernel's own parameter order (the attrs are by position), every parameter typed
    names = list(fn.arg_names)
    if set(signature) != set(names):
        raise ValueError(f"signature of {fn.__name__}: missing {sorted(set(names) - set(signature))}, "
                         f"unknown {sorted(set(signature) - set(names))}")
    signature = {n: signature[n] for n in names}
    unknown = [n for n in divisible if n not in names]
    if unknown:
        raise ValueError(f"divisibility hints for unknown arguments {unknown}")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    gluon = isinstance(fn, GluonJITFunction)
    src = (GluonASTSource if gluon else ASTSource)(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    levels = {lvl: compiled.asm[lvl] for lvl in LEVELS if lvl in compiled.asm}
    if gluon:
        # a Gluon kernel has no ttir: it is written at the TritonGPU level, layouts included; its IR as written
        # (before the GPU passes) stands in for the kernel as written
        levels["ttir"] = (f"// Gluon kernel {fn.__name__}: no Triton IR (Gluon writes TritonGPU IR, layouts "
                          f"included); this is its IR as written, before the GPU passes\n" + compiled.asm["source"])
    return levels
