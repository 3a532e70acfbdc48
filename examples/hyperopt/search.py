"""hyperopt's MongoTrials example; the one change for Strix is the import.

Run beside a worker (see README.md, "Coming from hyperopt"); prints the best x.
"""

from hyperopt import fmin, tpe
from mypkg.objective import objective, space

from shared.store import MongoTrials  # was: from hyperopt.mongoexp import MongoTrials

trials = MongoTrials("mongo://localhost:27017/foo_db/jobs", exp_key="exp1")
best = fmin(objective, space, algo=tpe.suggest, max_evals=10, trials=trials)
print(best)
