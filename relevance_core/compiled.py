"""How the per-request kernels are compiled (numba).

The ranking stage runs a few hundred candidates through features, co-visitation and trees on every
personalised request; as NumPy calls that was mostly per-call overhead, as compiled loops it is a few
tens of µs. ``nogil``: a serving thread computing a request does not hold up the others. The machine code
is cached on disk (next to the module, else in the user's cache directory) so a worker starts without
recompiling; where neither is writable (a read-only container) it is compiled once per process instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit


def kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(fn)
