"""A kernel's PTX assembled for sm_90a by the ptxas Triton ships (no GPU): what the register, spill and SASS
checks of the compiled kernels read (test_varlen.py, test_indexer_triton.py)."""
import functools
import os
import re
import subprocess
import tempfile

from triton.backends.nvidia.compiler import get_ptxas


@functools.lru_cache(maxsize=None)
def assembled(ptx: str) -> tuple:
    """One kernel's PTX assembled once for sm_90a: (ptxas -v's report, the SASS lines from the nvdisasm beside it)."""
    ptxas = get_ptxas(90).path
    with tempfile.TemporaryDirectory() as d:
        src, cubin = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        info = subprocess.run([ptxas, "-v", "-arch=sm_90a", src, "-o", cubin],
                              capture_output=True, text=True, check=True).stderr
        sass = subprocess.run([os.path.join(os.path.dirname(ptxas), "nvdisasm"), "-c", cubin],
                              capture_output=True, text=True, check=True).stdout.splitlines()
    return info, sass


def ptxas_usage(ptx: str) -> tuple:
    """(registers, spill bytes) of one kernel's PTX, for sm_90a."""
    info = assembled(ptx)[0]
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", info))
    return regs, spills


def sass_loops(sass: list) -> list:
    """The innermost loops of a kernel's SASS (nvdisasm lines): for each backward branch that encloses no other,
    the opcodes from its target to it (predicates and modifiers dropped: 'FFMA', 'QGMMA', ...)."""
    labels, code, pending = {}, [], []
    for line in sass:
        m = re.match(r"^\.(L\w+):", line)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?)\s*;", line)
        if m:
            addr = int(m.group(1), 16)
            labels.update({name: addr for name in pending})
            pending = []
            code.append((addr, m.group(2)))
    spans = []
    for addr, text in code:
        m = re.search(r"\bBRA\b.*?\.?(L\w+)", text)
        if m and labels.get(m.group(1), addr + 1) < addr:
            spans.append((labels[m.group(1)], addr))
    inner = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    return [[re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for x, t in code if a <= x <= b]
            for a, b in sorted(set(inner))]
