"""The one place where Strix's defaults and environment variable names live.

Priority everywhere is: CLI flag > environment variable > the value here. Entry points
resolve that once with :func:`shared.config.settings.resolve` and freeze the result
into a dataclass.
"""

from __future__ import annotations

# --- environment variable names (the compose file passes exactly these) -------------
ENV_MONGO = "STRIX_MONGO"  # MongoDB URI, e.g. mongodb://strix:***@mongo:27017/?authSource=admin
ENV_DB = "STRIX_DB"  # database name when the URI does not name one
ENV_HOME = "STRIX_HOME"  # where the embedded server, caches and outputs live
ENV_EMBEDDED_PORT = "STRIX_EMBEDDED_PORT"  # the port `strix mongo start` and launch start it on
ENV_DATA_DIR = "STRIX_DATA_DIR"  # directory with the Fashion-MNIST idx files
ENV_CACHE_DIR = "STRIX_CACHE_DIR"  # directory of prepared uint8 caches (shared volume)
ENV_GPUS = "STRIX_GPUS"  # comma list of GPU indices on this host, overrides nvidia-smi
ENV_GPU = "STRIX_GPU"  # force this worker onto one GPU index
ENV_FAKE_GPUS = "STRIX_FAKE_GPUS"  # pretend the host has N GPUs (tests, benchmarks)
ENV_GPU_CAPACITY = "STRIX_GPU_CAPACITY"  # light units per GPU
ENV_HEARTBEAT = "STRIX_HEARTBEAT"  # seconds between heartbeats
ENV_HOST = "STRIX_HOST"  # host name used for GPU leases (defaults to the hostname)
ENV_WEIGHTS_DIR = "STRIX_WEIGHTS_DIR"  # local ImageNet weight files (offline machines)
ENV_ALLOW_MODULES = "STRIX_ALLOW_MODULES"  # installed packages whose objectives workers run
ENV_DASHBOARD_HOST = "STRIX_DASHBOARD_HOST"  # where `strix dashboard` listens
ENV_DASHBOARD_PORT = "STRIX_DASHBOARD_PORT"
ENV_DASHBOARD_TOKEN = "STRIX_DASHBOARD_TOKEN"  # the dashboard login token (no flag)

# --- MongoDB -------------------------------------------------------------------------
MONGO_URL = "mongodb://127.0.0.1:27017"
DB_NAME = "strix"  # when neither --db, $STRIX_DB nor the URI's path names a database
DB_HELP = f"the URI's /DB, else {DB_NAME}"
EMBEDDED_HOST = "127.0.0.1"
EMBEDDED_PORT = 27017
SERVER_SELECTION_TIMEOUT_MS = 5000

# --- data ----------------------------------------------------------------------------
DEBIAN_DATA_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SIZE = 128
INTERPOLATION = "cubic"
CHANNELS = 1
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 42

# --- search --------------------------------------------------------------------------
MAX_EVALS = 50
ALGO = "tpe"  # bench/simulate.py's figures split (docs/benchmarks.md section 7): see LIAR
ALGOS = ("tpe", "rand", "anneal", "optuna-tpe", "optuna-gp")
LIAR = "worst"  # with ASHA and 16+ workers, Strix's usual set-up, tpe/worst won on mfh6
LIARS = ("worst", "mean", "best", "none")  # what pending trials are told
MAX_EPOCHS = 50
PATIENCE = 5

# --- workers -------------------------------------------------------------------------
GPU_CAPACITY = 4  # light trials per GPU; a heavy trial takes all of it
HEARTBEAT_S = 10.0
GRACE_FACTOR = 3.0  # a RUNNING job is stale after GRACE_FACTOR * heartbeat
MAX_ATTEMPTS = 3
CHECKPOINT_EVERY_MIN = 5.0  # a checkpoint inside an epoch at most this often (one per epoch too)
KEEP_BEST = 3  # finished trials whose final model is kept for `strix results --export`
POLL_FLOOR_S = 0.05
POLL_CAP_S = 2.0
RESERVE_TIMEOUT_S = 120.0
MAX_CONSECUTIVE_FAILURES = 4
