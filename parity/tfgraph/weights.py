"""`parity tf-import`: the graph's Const weights into a hand-written Keras model, by name.

A Const `aspp/project/kernel` goes to the variable `kernel` of the Keras layer `aspp_project`: the
graph's scope with '/' as '_' (Keras forbids '/' in layer names), or the scope a mapping file gives
for that layer. Float Consts of rank >= 1 are weights; scalars are graph constants. Every variable
and every weight must find its partner with the same shape, else nothing is loaded or written and
every problem is listed.

Layouts: TensorFlow's kernels are already Keras' (Conv2D HWIO whatever the data_format,
DepthwiseConv2dNative HWIM, Conv2DBackpropInput HWOI, MatMul (in, out), BiasAdd and FusedBatchNorm
vectors), so nothing is transposed. The one layout that differs is not a kernel's: a MatMul after
flattening an NCHW tensor reads C,H,W order, a channels-last Keras Flatten H,W,C. parity does not
guess that; put a Permute((3, 1, 2)) before the Flatten in the Keras model.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import ParityError


def normalized(name: str) -> str:
    """A graph name as Keras can spell it: '/' read as '_', a tensor's ':0' dropped."""
    return re.sub(r":\d+$", "", name).replace("/", "_")


def weight_constants(consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value for name, value in consts.items() if value.dtype.kind == "f" and value.ndim >= 1}


def match_weights(model, consts: dict[str, np.ndarray], mapping: dict[str, str]) -> tuple[list, list[str]]:
    """([(variable, const name)], problems): every Keras variable paired with one Const, or a problem."""
    weights = weight_constants(consts)
    index: dict[str, list[str]] = {}
    for name in weights:
        scope, _, variable = name.rpartition("/")
        index.setdefault(f"{normalized(scope)}/{variable}", []).append(name)
    pairs, problems, used = [], [], set()
    for layer in model.layers:
        scope = normalized(mapping[layer.name]) if layer.name in mapping else layer.name
        for variable in layer.weights:
            names = index.get(f"{scope}/{variable.name}", [])
            where = f"Keras {layer.name}/{variable.name} {tuple(variable.shape)}"
            if not names:
                problems.append(f"{where}: no graph Const whose scope, '/' read as '_', is {scope!r} and "
                                f"whose name ends /{variable.name}")
            elif len(names) > 1:
                problems.append(f"{where}: several graph Consts fit ({', '.join(names)}); name one in the mapping")
            elif weights[names[0]].shape != tuple(variable.shape):
                problems.append(f"{where}: graph Const {names[0]} is {weights[names[0]].shape}")
            else:
                pairs.append((variable, names[0]))
                used.add(names[0])
    problems += [f"graph Const {name} {weights[name].shape}: no Keras variable takes it"
                 for name in weights if name not in used]
    return pairs, problems


def load_graph_weights(model, consts: dict[str, np.ndarray], mapping: dict[str, str], where=None) -> int:
    """Assign every matched weight, or raise one error listing every problem (then nothing is assigned)."""
    pairs, problems = match_weights(model, consts, mapping)
    if problems:
        raise ParityError(f"cannot move the graph's weights into the Keras model ({len(problems)} problem"
                          f"{'s' if len(problems) > 1 else ''}): " + "; ".join(problems), where)
    for variable, name in pairs:
        variable.assign(consts[name])
    return len(pairs)
