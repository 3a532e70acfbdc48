"""The objective and space of hyperopt's MongoTrials tutorial, unchanged.

It lives in a package, not in the script: a Strix worker runs only code it can import
itself (started with ``--allow-module mypkg``), never code pickled into the database.
"""

from hyperopt import hp


def objective(x: float) -> float:
    return (x - 3.0) ** 2


space = hp.uniform("x", -10, 10)
