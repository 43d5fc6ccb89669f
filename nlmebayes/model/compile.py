"""How nlmebayes compiles the graphs it builds.

One set of PyTensor settings, and one helper that vectorises a graph over a leading batch axis (posterior
draws, simulation replicates).
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pytensor
import pytensor.tensor as pt
import scipy
from pytensor.graph.replace import vectorize_graph

__all__ = ["compile_settings", "batched_function", "scipy_blas_ldflags"]

# The BLAS routines PyTensor's C code declares (pytensor/tensor/blas/c_code/blas_headers.py).
_BLAS_ROUTINES = [
    f"{t}{r}" for t in "ds" for r in
    ("axpy", "copy", "dot", "gemm", "gemv", "ger", "scal", "syrk", "trmv", "trsm", "trsv")
]  # fmt: skip


def scipy_blas_ldflags() -> str:
    """PyTensor BLAS flags that link its C backend to the OpenBLAS bundled with scipy's wheel.

    PyTensor installed with pip finds no system BLAS: it warns that BLAS operations "will be
    severely degraded" and runs matrix products through NumPy. scipy's Linux wheel ships an
    OpenBLAS (32-bit integers, as PyTensor's C declarations expect) whose symbols carry the
    prefix ``scipy_``; the flags link it and map each name PyTensor uses (``dgemm_``) to the
    prefixed one with a preprocessor define. Empty when no such library is found or one of the
    routines is missing (then PyTensor's own search runs, as before).

    Examples
    --------
    >>> flags = scipy_blas_ldflags()
    >>> flags == "" or "-Ddgemm_=scipy_dgemm_" in flags
    True
    """
    libdir = Path(scipy.__file__).parent.parent / "scipy.libs"
    libs = sorted(libdir.glob("libscipy_openblas*.so")) if sys.platform == "linux" else []
    if not libs:
        return ""
    try:
        lib = ctypes.CDLL(str(libs[0]))
        if not all(hasattr(lib, f"scipy_{r}_") for r in _BLAS_ROUTINES):
            return ""
    except OSError:
        return ""
    name = libs[0].name.removeprefix("lib").removesuffix(".so")
    defines = " ".join(f"-D{r}_=scipy_{r}_" for r in _BLAS_ROUTINES)
    return f"-L{libdir} -l{name} -Wl,-rpath,{libdir} {defines}"


def _link_scipy_blas() -> None:
    """Use :func:`scipy_blas_ldflags` unless the user chose BLAS flags or PyTensor has settled them.

    Flags from ``PYTENSOR_FLAGS`` or ``.pytensorrc``, or set in the session before nlmebayes was
    imported, are left alone.
    """
    try:
        pytensor.config.fetch_val_for_key("blas__ldflags")
        return
    except KeyError:
        pass
    param = getattr(pytensor.config, "_config_var_dict", {}).get("blas__ldflags")
    if param is not None and hasattr(param, "val"):
        return
    flags = scipy_blas_ldflags()
    if flags:
        pytensor.config.blas__ldflags = flags


_link_scipy_blas()


@contextmanager
def compile_settings(pause_gc: bool = True):
    """Settings for every graph nlmebayes compiles: numba fast-math off, cyclic GC paused.

    The sampler density, derived quantities, OFV and MAP are compiled under these settings.
    With fast-math, a freshly compiled density and the same one loaded from PyTensor's disk
    cache differ in the last bit, and the same seed gave different draws on a model's first fit
    and on later ones. Without it they are bit-identical. The cost: none measurable on Theoph
    (2 x 2000 iterations: analytic 7.45 vs 7.54 s, ODE 15.48 vs 15.69 s); on the 120-subject rich
    designs of ``benchmarks/sampling.py`` 5-12% per log-density and gradient called from Python,
    and 18-30% of nutpie's time per gradient, where no call overhead dilutes it (rich oral, 4 x
    2000 iterations: 39.8 us per gradient and core vs 30.7-33.7 with fast-math). (It was 50% of their
    sampling time while the analytic models divided by V, KA - k, ... once per dose-observation
    pair: fast-math's reciprocals had hidden those divisions. LLVM's ``arcp`` flag alone was
    reproducible and took most of the gain; PyTensor sets all or none.)

    Python's cyclic garbage collector is paused while the block runs (``pause_gc``; restored
    after, so the cycles a compile leaves are collected then). Rewriting a graph allocates
    millions of small objects, and each full collection walks every object in the session
    (PyMC, numba, the user's data): Theoph's sampler density compiled in 2.45 s with the
    collector running and 1.96 s paused (medians of 4, alternating; 1.84 vs 2.20 s with 300,000
    extra objects alive). Pass ``pause_gc=False`` around code that samples in Python.

    Examples
    --------
    >>> import gc, pytensor, pytensor.tensor as pt
    >>> x = pt.dscalar("x")
    >>> with compile_settings():
    ...     f = pytensor.function([x], 2 * x)
    ...     paused = not gc.isenabled()
    >>> float(f(1.5)), paused, gc.isenabled()
    (3.0, True, True)
    """
    was_enabled = gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        with pytensor.config.change_flags(numba__fastmath=False):
            yield
    finally:
        if was_enabled:
            gc.enable()


def batched_function(inputs: Sequence, outputs: Sequence, mode: str = "FAST_COMPILE"):
    """Compile ``outputs`` for a batch: every input gains a leading batch axis.

    The graph is vectorised over that axis (``vectorize_graph``), so one call evaluates a whole
    batch of posterior draws or replicates without a Python loop.

    Parameters
    ----------
    inputs : sequence of TensorVariable
        Root inputs of the graph (no random variables).
    outputs : sequence of TensorVariable
        Outputs to compute; each gains the leading batch axis.
    mode : str
        PyTensor compilation mode.

    Returns
    -------
    callable
        ``fn(*batched_inputs) -> list of arrays``.

    Examples
    --------
    >>> import numpy as np, pytensor.tensor as pt
    >>> x = pt.dvector("x")
    >>> fn = batched_function([x], [pt.sum(x**2)])
    >>> fn(np.array([[1.0, 2.0], [3.0, 4.0]]))[0].tolist()
    [5.0, 25.0]
    """
    batch = [pt.tensor(name=v.name, dtype=v.dtype, shape=(None, *v.type.shape)) for v in inputs]
    outs = vectorize_graph(list(outputs), dict(zip(inputs, batch, strict=True)))
    with compile_settings():
        return pytensor.function(batch, outs, mode=mode, on_unused_input="ignore")
