"""The sparse MLA kernel's IR without a GPU (TileLang TIR and the generated CUDA source), and its
resources (registers, spills, shared memory) where nvcc is available."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

from .kernel import NO_ROPE, TARGET_ARCH, _build_locked, _pass_configs, _shape_class, get_kernel


def _dyn_smem(artifact):
    """Dynamic shared memory bytes per CTA recorded on the lowered device function."""
    try:
        for _, fn in artifact.device_mod.functions.items():
            v = fn.attrs.get("dyn_shared_memory_buf") if fn.attrs is not None else None
            if v is not None:
                return int(v)
    except Exception:  # noqa: BLE001  (TileLang-internal attribute; absent -> unknown)
        return None
    return None


@functools.lru_cache(maxsize=None)  # lowered once per process and argument set
def lower_sparse_mla_fwd(heads: int, dim_qk: int, dim_v: int, num_indices: int,
                         with_sink: bool, variant: str = "ws", arch: str = TARGET_ARCH,
                         return_lse: bool = False, block_keys: int = 64, rope: tuple = NO_ROPE) -> dict:
    """Lower without a GPU. Returns dict(tir=TVMScript of the prim_func, cuda=CUDA source,
    smem_bytes=dynamic shared memory per CTA from the lowered kernel, shape_class=...).
    rope: the fused inverse RoPE's (col0, rot_dim, seg) (kernel.build_sparse_mla_fwd)."""
    import tilelang
    import tvm

    if str(arch) != TARGET_ARCH:
        raise ValueError(f"the sparse MLA kernel lowers only for {TARGET_ARCH} (Hopper wgmma and "
                         f"setmaxnreg); got arch={arch!r}")
    sc = _shape_class(heads, dim_qk, dim_v, num_indices, with_sink, return_lse, variant,
                      block_keys, rope)
    func = _build_locked(*sc[:7], block_keys=sc[7], rope=sc[8])
    tgt = {"kind": "cuda", "arch": arch}
    with tvm.transform.PassContext(config=_pass_configs(variant)):
        with tvm.target.Target(tgt):
            art = tilelang.lower(func, target=tgt)
    return {"tir": func.script(), "cuda": art.kernel_source, "smem_bytes": _dyn_smem(art),
            "shape_class": dict(zip(("heads", "dim_qk", "dim_v", "num_indices", "with_sink",
                                     "return_lse", "variant", "block_keys", "rope"), sc))}


# ----------------------------------------------------------------------------------------
# resources (GPU machine: needs nvcc / cuobjdump, not necessarily a GPU)
# ----------------------------------------------------------------------------------------
def kernel_resources(heads: int, dim_qk: int, dim_v: int, num_indices: int, with_sink: bool,
                     return_lse: bool = False, variant: str = "ws", arch: str = TARGET_ARCH,
                     ptxas_verbose: bool = True, rope: tuple = NO_ROPE) -> dict[str, Any]:
    """Registers per thread, spills and shared memory per CTA of the compiled kernel.

    TileLang 0.1.15 fills JITKernel.n_regs / n_spills only for HIP, so this recompiles the
    generated source with `nvcc -cubin -Xptxas -v` (same flags as TileLang) and parses ptxas'
    report; cuobjdump --dump-resource-usage is the fallback. Dynamic shared memory comes from
    the lowered kernel's attributes. Each field is None when its source failed; 'errors'
    lists why."""
    res: dict[str, Any] = {"regs": None, "spill_stores_bytes": None, "spill_loads_bytes": None,
                           "stack_bytes": None, "static_smem_bytes": None,
                           "dyn_smem_bytes": None, "smem_per_cta_bytes": None, "errors": []}
    kernel = get_kernel(heads, dim_qk, dim_v, num_indices, with_sink, return_lse, variant,
                        arch=arch, rope=rope)
    for name in ("n_regs", "n_spills"):
        try:
            v = getattr(kernel, name)
            if v is not None:
                res["regs" if name == "n_regs" else "spill_stores_bytes"] = int(v)
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"{name}: {e}")
    try:
        res["dyn_smem_bytes"] = _dyn_smem(getattr(kernel, "artifact", None))
        if res["dyn_smem_bytes"] is None:  # loaded from the disk cache: lower again
            low = lower_sparse_mla_fwd(heads, dim_qk, dim_v, num_indices, with_sink, variant,
                                       arch, return_lse, rope=rope)
            res["dyn_smem_bytes"] = low["smem_bytes"]
    except Exception as e:  # noqa: BLE001
        res["errors"].append(f"lower: {e}")
    src = kernel.get_kernel_source()
    if ptxas_verbose:
        try:
            res.update(_ptxas_report(src, arch, _pass_configs(variant)))
        except Exception as e:  # noqa: BLE001
            res["errors"].append(f"ptxas: {e}")
    if res["regs"] is None:
        res["errors"].append("no register count from ptxas; try cuobjdump")
    if res["dyn_smem_bytes"] is not None:
        res["smem_per_cta_bytes"] = res["dyn_smem_bytes"] + (res["static_smem_bytes"] or 0)
    return res


def _ptxas_report(src: str, arch: str, pass_configs: dict) -> dict:
    from tilelang.contrib import nvcc as tl_nvcc

    opts = tl_nvcc.default_compile_options(None)
    if pass_configs.get("tl.enable_fast_math") or any(
            str(k).endswith("enable_fast_math") and v for k, v in pass_configs.items()):
        opts.append("--use_fast_math")
    nvcc = tl_nvcc.get_nvcc_compiler()
    with tempfile.TemporaryDirectory() as d:
        cu, cubin = os.path.join(d, "k.cu"), os.path.join(d, "k.cubin")
        with open(cu, "w") as f:
            f.write(src)
        cmd = [nvcc, "--cubin", "-O3", f"-arch={arch}", *opts, "-Xptxas", "-v", "-o", cubin, cu]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed ({proc.returncode}): {text[-2000:]}")
        out: dict[str, Any] = {"ptxas": text[-4000:]}
        m = re.search(r"Used (\d+) registers", text)
        if m:
            out["regs"] = int(m.group(1))
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      text)
        if m:
            out["stack_bytes"], out["spill_stores_bytes"], out["spill_loads_bytes"] = map(
                int, m.groups())
        m = re.search(r"(\d+) bytes smem", text)
        if m:
            out["static_smem_bytes"] = int(m.group(1))
        tool = shutil.which("cuobjdump") or os.path.join(os.path.dirname(nvcc), "cuobjdump")
        if os.path.exists(tool):
            p2 = subprocess.run([tool, "--dump-resource-usage", cubin], capture_output=True,
                                text=True, timeout=120)
            out["cuobjdump"] = p2.stdout[-2000:]
            m = re.search(r"REG:(\d+)", p2.stdout)
            if m and "regs" not in out:
                out["regs"] = int(m.group(1))
        return out


