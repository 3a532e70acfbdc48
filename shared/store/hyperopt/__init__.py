"""hyperopt's public ``mongoexp`` API (``MongoJobs``, ``MongoTrials``, ``MongoWorker``) on
pymongo 4, with hyperopt's job schema: what makes Strix a drop-in for hyperopt users.
Imported lazily through :mod:`shared.store`, so the store itself does not import hyperopt."""
