"""Optimiser state as flat tensors and strings, so it can be saved as `optimizer.safetensors`.

Part of the engine under everything: resuming a run needs the optimiser's memory (momentum,
Adam's moments and step count) as much as the weights, and it must be stored without pickle.
A state dict is nested (`{"state": {0: {"exp_avg": array, "step": 3}}, "param_groups": [...]}`),
while a safetensors file holds a flat map of named arrays plus string metadata. The mapping:

    state[i][key] = array        ->  tensor   "state.{i}.{key}"
    state[i][key] = int/float    ->  metadata "state_scalars" = JSON {"i": {"key": value}}
    param_groups                 ->  metadata "param_groups"  = JSON list (tuples become lists)
                                     metadata "format"        = "numpylm.optimizer_state.v1"

JSON writes Python ints exactly and floats by their shortest round-tripping repr, so the
round trip is exact.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["optimizer_state_from_tensors", "optimizer_state_to_tensors"]

FORMAT = "numpylm.optimizer_state.v1"


def optimizer_state_to_tensors(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Flatten an optimiser `state_dict()` into (tensors, metadata) for `save_safetensors`."""
    if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
        raise ValueError(
            "an optimizer state dict has exactly the keys 'state' and 'param_groups'"
        )
    tensors: dict[str, np.ndarray] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for i, entry in state_dict["state"].items():
        for key, value in entry.items():
            if "." in str(key):
                raise ValueError(
                    f"state key {key!r} of param {i} contains '.', "
                    "which the flat names use as separator"
                )
            if isinstance(value, np.ndarray):
                tensors[f"state.{int(i)}.{key}"] = value
            elif isinstance(value, (bool, int, float, str)) or value is None:
                scalars.setdefault(str(int(i)), {})[key] = value
            else:
                raise TypeError(
                    f"state of param {i}: {key!r} is a {type(value).__name__}, "
                    "not an array or scalar"
                )
    try:
        groups = json.dumps(list(state_dict["param_groups"]), allow_nan=False)
        scalar_text = json.dumps(scalars, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"optimizer state holds a value JSON cannot store: {e}") from None
    metadata = {"format": FORMAT, "param_groups": groups, "state_scalars": scalar_text}
    return tensors, metadata


def optimizer_state_from_tensors(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> dict[str, Any]:
    """Rebuild the state dict written by `optimizer_state_to_tensors`.

    The result is checked against the optimiser by its `load_state_dict`.
    """
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}: "
            "not an optimizer state written by numpylm"
        )
    try:
        groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata["state_scalars"])
    except KeyError as e:
        raise ValueError(f"optimizer state metadata lacks {e.args[0]!r}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"optimizer state metadata is not valid JSON: {e}") from None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("optimizer state metadata 'param_groups' must be a JSON list of objects")
    if not isinstance(scalars, dict) or not all(isinstance(s, dict) for s in scalars.values()):
        raise ValueError(
            "optimizer state metadata 'state_scalars' must be a JSON object of objects"
        )
    # torch keeps betas as a tuple; lists are JSON's rendering of it, "params" excepted.
    groups = [
        {k: tuple(v) if k != "params" and isinstance(v, list) else v for k, v in g.items()}
        for g in groups
    ]

    state: dict[int, dict[str, Any]] = {}
    for i, entry in scalars.items():
        if not i.isdigit():
            raise ValueError(f"optimizer state metadata names param {i!r}, not an index")
        state.setdefault(int(i), {}).update(entry)
    for name, array in tensors.items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit() or not parts[2]:
            raise ValueError(
                f"unexpected tensor {name!r} in optimizer state "
                "(expected 'state.<index>.<key>')"
            )
        state.setdefault(int(parts[1]), {})[parts[2]] = array
    return {"state": dict(sorted(state.items())), "param_groups": groups}
