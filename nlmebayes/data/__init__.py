"""NONMEM-style event data.

Reading and checking (:mod:`.read`), dosing expansion (:mod:`.dosing`), the flat arrays the graph builder uses
(:mod:`.events`), conditions and ID labels (:mod:`.conditions`). PyMC-free.
"""

from nlmebayes.data.conditions import OPS, format_id, id_label, parse_condition
from nlmebayes.data.errors import DataError
from nlmebayes.data.events import EventData, record_line
from nlmebayes.data.read import RESERVED_COLUMNS, build_events, check_compartments, read_nonmem

__all__ = [
    "DataError",
    "EventData",
    "read_nonmem",
    "build_events",
    "check_compartments",
    "RESERVED_COLUMNS",
    "OPS",
    "parse_condition",
    "id_label",
    "format_id",
    "record_line",
]
