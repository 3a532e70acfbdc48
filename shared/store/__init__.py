"""Strix's MongoDB store: the only package that imports pymongo.

``Store`` is the facade the worker and coordinator use. ``MongoTrials``, ``MongoJobs``,
``MongoWorker`` and the worker helpers are hyperopt's public ``mongoexp`` API rebuilt on
pymongo 4 with the same schema and signatures, so migrating a hyperopt script is one
import: ``from shared.store import MongoTrials``. They are loaded on first use, so
importing the store does not import hyperopt.
Every error that leaves this package is a :class:`~shared.errors.StoreError`.
"""

from __future__ import annotations

import importlib
from typing import Any

from shared.store.client import parse_target, redact
from shared.store.codec import encode
from shared.store.facade import Store, connect
from shared.store.reads import (
    JOB_STATE_DONE,
    JOB_STATE_ERROR,
    JOB_STATE_NEW,
    JOB_STATE_RUNNING,
    STATES,
    State,
)

_LAZY = {
    "MongoJobs": "shared.store.hyperopt.mongojobs",
    "StrixMongoJobs": "shared.store.hyperopt.mongojobs",
    "MongoTrials": "shared.store.hyperopt.trials",
    "StrixMongoTrials": "shared.store.hyperopt.trials",
    "MongoWorker": "shared.store.hyperopt.mongoworker",
    "main_worker_helper": "shared.store.hyperopt.mongoworker",
    "main_worker": "shared.store.hyperopt.mongoworker",
    "main": "shared.store.hyperopt.mongoworker",
    "as_mongo_str": "shared.store.hyperopt.mongoworker",
    "parse_url": "shared.store.hyperopt.mongoworker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shared.store' has no attribute {name!r}")


__all__ = [
    "JOB_STATE_DONE",
    "JOB_STATE_ERROR",
    "JOB_STATE_NEW",
    "JOB_STATE_RUNNING",
    "STATES",
    "MongoJobs",
    "MongoTrials",
    "MongoWorker",
    "State",
    "Store",
    "StrixMongoJobs",
    "StrixMongoTrials",
    "as_mongo_str",
    "connect",
    "encode",
    "main",
    "main_worker",
    "main_worker_helper",
    "parse_target",
    "parse_url",
    "redact",
]
