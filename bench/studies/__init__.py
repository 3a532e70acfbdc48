"""Whole studies measured: pruning rules (``pruning``), the feature cache (``feature_study``)
and the seed's study on a lent GPU (``gpu_study``); ``common`` runs and reads them."""
