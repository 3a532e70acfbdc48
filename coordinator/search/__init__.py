"""Suggestion engines behind hyperopt's ``algo`` contract: hyperopt's own and Optuna's
samplers (``engines``, ``optuna_engine``), each told about running trials by a constant
liar (``liar``)."""
