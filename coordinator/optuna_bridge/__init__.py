"""Strix's store seen as a read-only Optuna storage, so optuna-dashboard can show a study:
the mapping of hyperopt trials to Optuna's (``mapping``, pure), the storage (``storage``) and
the token gate in front of the page (``access``)."""
