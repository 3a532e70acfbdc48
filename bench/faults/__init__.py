"""Faults injected into a real study: the study harness (``harness``) and the scenarios
(``scenarios``). ``python -m bench.faults --help``."""
