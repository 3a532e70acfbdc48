"""A hyperopt user's own objective package, as it would be installed on a worker.

Strix workers run it only when started with ``--allow-module tests.hyperopt_user``.
"""
