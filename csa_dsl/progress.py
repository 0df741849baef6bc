"""Progress bars for long runs (a nicety: none when tqdm is missing)."""
from __future__ import annotations


def progress_bar(desc: str):
    """A tqdm bar factory for the interpreter, `factory(total) -> bar`, or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return lambda total: tqdm(total=total, desc=desc, unit="chunk", leave=False)
