"""Loading pickles from outside without running them.

A pickle is a program: unpickling can call any importable function. The released benchmark files that come as
pickles (TCaF's per-class feature dicts, the fastText ``.npy`` dicts) only need lists, dicts, tuples, strings, bytes,
numbers and numpy arrays, so that is all this unpickler will construct. Anything else is refused with
:class:`UnsafePickleError` before it can run.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format

# (module, name) pairs a data-only pickle of numpy arrays needs. numpy 2 renamed numpy.core to numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
}


class UnsafePickleError(ValueError):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str = "pickle"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to unpickle {self.source}: it asks for {module}.{name}, which could run code; only "
                "lists, dicts, tuples, strings, bytes, numbers and numpy arrays are accepted")
        for candidate in (module.replace("numpy.core", "numpy._core", 1), module.replace("numpy._core", "numpy.core", 1)):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"{self.source}: {module}.{name} is not available in this numpy")


def load_pickle(path: str | Path):
    path = Path(path)
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, str(path)).load()


def loads(data: bytes, source: str = "pickle"):
    return RestrictedUnpickler(io.BytesIO(data), source).load()


def load_npy(path: str | Path):
    """An ``.npy`` file; object arrays (e.g. a saved dict) are unpickled with the restricted unpickler.
    A 0-d object array is returned as the object it holds."""
    path = Path(path)
    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"{path}: unsupported .npy version {version}")
        shape, fortran, dtype = reader(f)
        if dtype.hasobject:
            arr = RestrictedUnpickler(f, str(path)).load()
            return arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr
        data = np.frombuffer(f.read(), dtype=dtype, count=int(np.prod(shape)) if shape else 1)
        return data.reshape(shape, order="F" if fortran else "C")
