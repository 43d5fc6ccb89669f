"""NONMEM in and out: control streams and results in, NONMEM-style tables out.

:mod:`.control_stream` converts a ``.mod`` file (parsed by Pharmpy) into a ``ModelSpec`` and
``EventData``; :mod:`.results` reads ``.ext`` estimates and ``.phi`` EBEs; :mod:`.tables` writes
sdtab/patab/cotab/catab and an ``.ext``-like file of a fit.
"""
