"""Interop and scripted use: NONMEM-style tables and the ``nlmebayes`` command.

NONMEM-style output tables are in :mod:`.nonmem_tables`, the command line in :mod:`.cli`. The
tables load on first use, so that ``nlmebayes --help`` answers without importing PyMC.
"""

__all__ = ["sdtab", "patab", "cotab", "catab", "ext_table", "write_tables"]


def __getattr__(name):
    if name not in __all__:
        raise AttributeError(f"module 'nlmebayes.io' has no attribute {name!r}")
    from nlmebayes.io import nonmem_tables

    return getattr(nonmem_tables, name)
