"""The one place that reads checkpoint files from outside: tensors only, never code; strict loading.

:func:`load_checkpoint` reads any ``torch.save`` file (zip or the legacy format, e.g. C3D's ``c3d.pickle``) with
``weights_only=True``: a file whose pickle asks for anything but tensors, containers and plain values (e.g. a
GLOBAL of ``os.system``, or any class) is refused with :class:`CheckpointError` naming the file, before anything in
it runs. :func:`state_dict_of` unwraps the usual containers (``state_dict``, ``model``, a DistributedDataParallel
``module.`` prefix). :func:`load_strict` fills a module from such a state dict through an explicit prefix mapping,
with named unused heads dropped on purpose; anything else missing, unexpected or of the wrong shape is an error
that lists it.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from extractors.feature_sets import BackboneError

WRAPPERS = ("state_dict", "model", "model_state_dict", "net")  # tried in this order
DDP_PREFIX = "module."
SHOWN = 20  # keys listed per kind in an error


class CheckpointError(BackboneError):
    pass


def _numpy_globals() -> list:
    """What a pickle of plain numpy arrays needs (numpy 2 moved numpy.core to numpy._core)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    kinds = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return [_reconstruct, np.ndarray, np.dtype, *{type(np.dtype(k)) for k in kinds}]


def load_checkpoint(path: str | Path, numpy_arrays: bool = False):
    """Whatever ``path`` holds, read with ``torch.load(map_location="cpu", weights_only=True)``. ``numpy_arrays``
    also admits numpy arrays of plain numbers (e.g. a PCA file saved as arrays); still no code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if numpy_arrays:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        asked = _globals_asked(path)
        if asked:
            reason = f"it asks for {', '.join(asked[:5])}"
        else:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")
            reason = f"the restricted reader stopped at: {reason[:300]}"
        raise CheckpointError(f"refusing to load {path}: it is not a plain tensor checkpoint ({reason}), and loading "
                              "it without restrictions could run code; nothing in it was executed. Get the file from "
                              "its official source, or convert it to a state dict of tensors in an environment you "
                              "trust") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:300]}") from None


def _globals_asked(path: Path) -> list[str]:
    """The functions and classes a checkpoint's pickle names, read without running it (for the message)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a torch.save zip: scan the raw pickle's opcodes
        pass
    import pickletools

    found, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: the message falls back to the loader's words
        pass
    return list(dict.fromkeys(found))


def state_dict_of(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor state dict inside a loaded checkpoint: ``obj`` itself, or its ``state_dict`` / ``model`` / ...
    entry; a ``module.`` prefix on every key (DistributedDataParallel) is removed."""
    state = obj
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}} is not unusual
        if isinstance(state, Mapping) and not _is_state_dict(state):
            inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), None)
            if inner is None:
                break
            state = inner
    if not (isinstance(state, Mapping) and _is_state_dict(state)):
        top = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{source}: no state dict of tensors found (top level: {top}; looked for a mapping of "
                              f"tensors, or one under {list(WRAPPERS)})")
    state = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return state


def _is_state_dict(m: Mapping) -> bool:
    return bool(m) and all(isinstance(v, torch.Tensor) for v in m.values())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    return state_dict_of(load_checkpoint(path), str(path))


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                mapping: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> list[str]:
    """Load ``state`` into ``module``, every key accounted for.

    ``mapping``: checkpoint key prefix -> module key prefix (e.g. ``{"video_network.base.": "video."}``); a key
    under no listed prefix is unexpected. None: keys as they are. ``drop``: prefixes of checkpoint keys that are
    deliberately not used (classification heads); they are skipped whatever their shape. A missing BatchNorm
    ``num_batches_tracked`` counter (older checkpoints) is not an error: it does not change the output. Returns the
    dropped keys. Raises :class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, dropped = [], []
    for key, value in state.items():
        if any(key.startswith(d) for d in drop):
            dropped.append(key)
            continue
        if mapping is None:
            target = key
        else:
            prefix = next((p for p in mapping if key.startswith(p)), None)
            if prefix is None:
                unexpected.append(key)
                continue
            target = mapping[prefix] + key[len(prefix):]
        if target in own:
            mapped[target] = value
        else:
            unexpected.append(key)
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    shapes = [f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} expected" for k, v in mapped.items()
              if tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        back = {v: k for k, v in (mapping or {}).items()}
        missing_src = [_to_source(k, back) for k in missing]
        parts = []
        for what, keys in (("missing", missing_src), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
                parts.append(f"{what} ({len(keys)}): {keys[:SHOWN]}{more}")
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    for k, v in own.items():
        if k not in mapped:  # num_batches_tracked only
            mapped[k] = v
    module.load_state_dict(mapped, strict=True)
    return dropped


def _to_source(key: str, back: Mapping[str, str]) -> str:
    """A module key as the checkpoint would spell it."""
    for module_prefix in sorted(back, key=len, reverse=True):
        if key.startswith(module_prefix):
            return back[module_prefix] + key[len(module_prefix):]
    return key
