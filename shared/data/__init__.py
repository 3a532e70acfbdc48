"""Fashion-MNIST as trials see it: find and check the idx files (``idx``), say which arrays a
trial gets (``spec``), resize them once into a shared memory-mapped cache (``cache``), feed them
(``batches``, ``augment``) and cache a frozen base's features (``features``).

``python -m shared.data prepare`` is ``strix prepare`` (``prepare``).
"""
