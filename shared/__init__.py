"""Strix's shared package: everything both the coordinator and the workers import.

Workers only ever run code from this installed package, so it is also the unit of
versioning: a job posted by another Strix version is refused (see ``__version__``).
"""

__version__ = "0.2.0"
