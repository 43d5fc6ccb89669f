"""Test configuration: property tests draw the same examples on every machine (seeded)."""

from hypothesis import settings

# Reproducible like every other random step here: CI and a developer see the same examples.
settings.register_profile("nlmebayes", derandomize=True, database=None)
settings.load_profile("nlmebayes")
