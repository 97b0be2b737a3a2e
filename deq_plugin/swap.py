"""Replace named submodules of any model by DEQ blocks, checking that each replacement fits.

A target is a dotted module path ("features.0.stack") or a slice of an `nn.Sequential` stack
("encoder.layers[2:6]"), which is replaced by one block. The model is run once on example inputs
with forward hooks that record each target's inputs and output; each replacement is then run on
those inputs and must return the same shape, dtype and device.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from deq_plugin.blocks import BLOCKS
from deq_plugin.deq import DEQ

_SLICE = re.compile(r"^(?P<path>[\w.]*)\[(?P<start>\d*):(?P<stop>\d*)\]$")


@dataclass
class BlockSpec:
    """Which builder replaces a target, and the options passed to it."""

    block: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Target:
    parent: nn.Module
    path: str
    start: int | None = None  # a slice [start, stop) of a Sequential
    stop: int | None = None

    def modules(self) -> nn.Module:
        if self.start is None:
            return self.parent
        return nn.Sequential(*list(self.parent)[self.start : self.stop])


def _resolve(model: nn.Module, target: str) -> _Target:
    match = _SLICE.match(target)
    path = match["path"] if match else target
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        valid = [name for name, _ in model.named_modules() if name]
        raise ValueError(f"no submodule {path!r} in {type(model).__name__}; valid paths: {valid}") from None
    if not match:
        return _Target(module, path)
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"slice target {target!r} needs an nn.Sequential, {path!r} is {type(module).__name__}")
    n = len(module)
    start = int(match["start"]) if match["start"] else 0
    stop = int(match["stop"]) if match["stop"] else n
    if not 0 <= start < stop <= n:
        raise ValueError(f"slice [{start}:{stop}] of {path!r} is empty or out of range for {n} layers")
    return _Target(module, path, start, stop)


def _record_io(model: nn.Module, targets: dict[str, _Target], example_inputs: Sequence[Any]) -> dict[str, tuple]:
    """Runs the model once; returns each target's (inputs, output)."""
    seen: dict[str, list] = {name: [None, None] for name in targets}
    handles = []
    for name, t in targets.items():
        first = t.parent if t.start is None else t.parent[t.start]
        last = t.parent if t.start is None else t.parent[t.stop - 1]
        handles.append(first.register_forward_pre_hook(lambda m, args, name=name: seen[name].__setitem__(0, args)))
        handles.append(last.register_forward_hook(lambda m, args, out, name=name: seen[name].__setitem__(1, out)))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    for name, (inputs, output) in seen.items():
        if inputs is None:
            raise ValueError(f"target {name!r} was not called when the model ran on the example inputs")
    return {name: tuple(io) for name, io in seen.items()}


def _check_fit(name: str, block: nn.Module, inputs: tuple, expected: Tensor) -> None:
    with torch.no_grad():
        try:
            got = block(*inputs)
        except Exception as error:  # report which replacement failed and on what
            shapes = [tuple(i.shape) for i in inputs if isinstance(i, Tensor)]
            raise ValueError(f"replacement for {name!r} failed on the probe inputs of shapes {shapes}: {error}") from error
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        raise ValueError(
            f"replacement for {name!r} returns shape {tuple(getattr(got, 'shape', ()))}, "
            f"the original returns {tuple(expected.shape)}"
        )


def swap(model: nn.Module, spec: Mapping[str, BlockSpec], example_inputs: Sequence[Any]) -> nn.Module:
    """Replaces each target in `spec` by the block its builder makes, in place; returns the model.

    Builders come from `deq_plugin.blocks.BLOCKS`; each replacement is moved to the original's
    device and dtype and must reproduce its output shape on `example_inputs`.
    """
    targets = {name: _resolve(model, name) for name in spec}
    for name, block_spec in spec.items():
        BLOCKS.get(block_spec.block)
    io = _record_io(model, targets, example_inputs)
    # Replace slices from the highest index down so earlier indices stay valid.
    order = sorted(targets, key=lambda n: (targets[n].path, -(targets[n].start or 0)))
    for name in order:
        target, block_spec = targets[name], spec[name]
        original = target.modules()
        reference = next(iter(p for p in original.parameters()), None)
        block = BLOCKS.get(block_spec.block)(original, name=name, **block_spec.options)
        if reference is not None:
            block = block.to(device=reference.device, dtype=reference.dtype)
        inputs, output = io[name]
        _check_fit(name, block, inputs, output)
        for deq in (m for m in block.modules() if isinstance(m, DEQ)):
            deq.reset_warm_start()  # the probe must not seed the first real solve
        _install(model, target, block)
    return model


def _install(model: nn.Module, target: _Target, block: nn.Module) -> None:
    if target.start is not None:
        layers = list(target.parent)
        layers[target.start : target.stop] = [block]
        stack: nn.Sequential = target.parent
        for key in list(stack._modules):
            del stack._modules[key]
        for i, layer in enumerate(layers):
            stack.add_module(str(i), layer)
        return
    parent_path, _, attr = target.path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, block)
