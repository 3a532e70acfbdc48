"""A hyperopt user's script, unchanged except for one import.

Run as ``python -m tests.hyperopt_user.script URL EXP_KEY ALGO MAX_EVALS``; prints the best
parameters as JSON. With plain hyperopt the import would read
``from hyperopt.mongoexp import MongoTrials``.
"""

import json
import sys

from hyperopt import fmin, rand, tpe

from shared.store import MongoTrials  # was: from hyperopt.mongoexp import MongoTrials
from tests.hyperopt_user.objective import SPACE, quadratic

url, exp_key, algo, max_evals = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
trials = MongoTrials(url, exp_key=None if exp_key == "-" else exp_key)
best = fmin(
    quadratic,
    SPACE,
    algo={"tpe": tpe.suggest, "rand": rand.suggest}[algo],
    max_evals=max_evals,
    trials=trials,
    show_progressbar=False,
)
print(json.dumps({"best": best, "n": len(trials.trials), "losses": trials.losses()}))
