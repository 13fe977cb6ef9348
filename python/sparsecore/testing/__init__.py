"""Helpers for testing code that uses sparsecore (needs ``pip install 'sparsecore[testing]'``)."""
