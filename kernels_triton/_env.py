"""Where the Triton kernels run: on a GPU, or (CPU tests) in Triton's interpreter.

Triton decides when a @triton.jit decorator runs: with TRITON_INTERPRET=1 set then, every
kernel (and triton.language's own jit helpers) is an interpreted function that runs on CPU
tensors and cannot be compiled for a GPU target. This module is the one place that asks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from triton.runtime.jit import JITFunction


def interpreting() -> bool:
    """TRITON_INTERPRET is set now (kernels defined from now on run in the interpreter)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernels_interpreted(kernel) -> bool:
    """Was `kernel` defined under TRITON_INTERPRET=1 (it then runs on CPU tensors, and compiles only elsewhere)?"""
    return not isinstance(kernel, JITFunction)


def compiling_env() -> tuple:
    """(project root, environment) for a child process that compiles kernels: the interpreter off,
    the project importable from a plain checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return root, env


def compile_ir_elsewhere(module: str, kwargs: dict) -> dict:
    """`module`.compile_ir(**kwargs) in a fresh Python process with the interpreter off.

    Under TRITON_INTERPRET=1 (set before import) every @triton.jit function, triton.language's
    tl.sum / tl.max included, is interpreted and triton.compile cannot take it; a child process
    without the variable compiles normally."""
    root, env = compiling_env()
    code = (f"import json, sys; from {module} import compile_ir; "
            f"json.dump(compile_ir(**json.loads(sys.argv[1])), sys.stdout)")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                       env=env, cwd=root)
    if r.returncode != 0:
        raise RuntimeError(f"compiling {module} in a child process failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
