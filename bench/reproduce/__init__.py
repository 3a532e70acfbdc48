"""The papers' figures reproduced: the rows to run (``rows``), the runner (``main``) and the
document it writes (``doc``). ``python -m bench.reproduce --help``."""
