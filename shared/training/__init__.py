"""One trial's training, the same on a worker, in ``strix train`` and in ``strix final``:
the job document's contract (``jobs``), the loop (``loop``), its callbacks and learning-rate
schedules, the pruning decision (``pruning``, pure) and the Keras backend choice (``backend``)."""
