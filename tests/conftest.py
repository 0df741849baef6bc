"""Test setup.

Without a GPU, the Triton kernels run in Triton's interpreter: TRITON_INTERPRET=1
must be set before any kernel module is imported (Triton decides at decoration
time), so it is set here. On a GPU machine it is left unset and the interpreter
tests skip; `python -m pytest -m gpu` runs the GPU tests. Compiling kernels for a
GPU target (IR tests) needs the non-interpreted kernels, so those tests run the
CLI in a subprocess without the variable.
"""
import os
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # packages importable from a plain checkout
    sys.path.insert(0, ROOT)

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run `python -m pytest -m gpu` on a GPU machine)")
    skip_interp = pytest.mark.skip(reason="Triton interpreter tests run on CPU-only machines (TRITON_INTERPRET=1)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "interpret" in item.keywords and not INTERPRETING:
            item.add_marker(skip_interp)


@pytest.fixture
def clean_env():
    """Environment for subprocesses that compile kernels for a GPU target (no interpreter)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """GPU tests draw fresh random inputs every run: a new global seed, reported in the output of a
    failing test and in the junit record (user property `seed`), so a failure can be replayed."""
    if "gpu" not in request.keywords:
        yield None
        return
    seed = time.time_ns() % 2**31
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    print(f"random seed {seed} (torch.manual_seed)")
    yield seed
