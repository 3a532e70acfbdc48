"""Put this folder on PYTHONPATH to run a process as if TensorFlow were not installed:
any import of it fails, as on a JAX- or PyTorch-only machine."""

import sys


class _NoTensorFlow:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (this machine has no TensorFlow)")


sys.meta_path.insert(0, _NoTensorFlow())
