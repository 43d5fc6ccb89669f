"""Interop and scripted use: NONMEM in and out, and the ``nlmebayes`` command.

:mod:`.nonmem` converts control streams (:func:`read_control_stream`), reads ``.ext``/``.phi``
results (:func:`read_ext`, :func:`read_phi`) and writes NONMEM-style tables (:func:`write_tables`);
the command line is :mod:`.cli`. Everything loads on first use, so that ``nlmebayes --help``
answers without importing PyMC.
"""

from importlib import import_module

_WHERE = {
    **dict.fromkeys(["sdtab", "patab", "cotab", "catab", "ext_table", "write_tables"], "tables"),
    **dict.fromkeys(["read_control_stream", "ConvertedModel", "ControlStreamError"], "control_stream"),
    **dict.fromkeys(["read_ext", "read_phi", "NonmemEstimates"], "results"),
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'nlmebayes.io' has no attribute {name!r}")
    return getattr(import_module(f"nlmebayes.io.nonmem.{_WHERE[name]}"), name)
