"""Interop with other tools: NONMEM-style output tables (:mod:`.nonmem_tables`)."""

from nlmebayes.io.nonmem_tables import catab, cotab, ext_table, patab, sdtab, write_tables

__all__ = ["sdtab", "patab", "cotab", "catab", "ext_table", "write_tables"]
