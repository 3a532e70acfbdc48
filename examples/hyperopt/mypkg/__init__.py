"""A hyperopt user's own package: the objective a worker imports (never unpickles)."""
