"""The search simulator behind ``bench/simulate.py``: benchmark curves (``problems``), the
virtual-time event loop (``sim``), who tunes (``searchers``) and the figures (``report``)."""
