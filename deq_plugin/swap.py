"""Replace named submodules of any model by DEQ blocks, checking that each replacement fits and converges.

A target is a dotted module path ("features.0.stack", "res1.1" for an item of an `nn.ModuleList`)
or a slice of an `nn.Sequential` stack ("encoder.layers[2:6]"), which is replaced by one block.
The model is run once on example inputs with forward hooks that record each target's inputs and
output; each replacement is then run on those inputs, must return the same shape, and its DEQ
layers must converge there.
"""
from __future__ import annotations

import copy
import inspect
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from deq_plugin.blocks import BLOCKS
from deq_plugin.deq import DEQ, DEQStats

_SLICE = re.compile(r"^(?P<path>[\w.]*)\[(?P<start>\d*):(?P<stop>\d*)\]$")
UNCONVERGED_MODES = ("error", "warn")


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
        if type(module).forward is nn.Module.forward:
            items = [f"{path}.{key}" for key in list(module._modules)[:2]]
            raise ValueError(f"{path!r} ({type(module).__name__}) has no forward of its own; name its items, e.g. {items}")
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


def _check_converged(name: str, block: nn.Module, on_unconverged: str) -> None:
    for deq in (m for m in block.modules() if isinstance(m, DEQ)):
        stats = deq.stats
        if stats is None or stats.converged:
            continue
        message = (
            f"DEQ layer {deq.name!r} (in {name!r}) did not converge on the example inputs: {stats.n_iter} iterations, relative "
            f"residual {stats.rel_residual:.3g} > tol {deq.tol:g}. Try: a larger norm_lambda (a stronger "
            "contraction), norm_layers='remove' if it keeps norm layers, solver='anderson', or a larger max_iter"
        )
        if on_unconverged == "error":
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, DistributedDataParallel):
        raise ValueError(
            "swap the model before wrapping it in DistributedDataParallel, which fixes its parameter list when it "
            "is built: model = DistributedDataParallel(swap(model, spec, example_inputs))"
        )
    return model.module if isinstance(model, DataParallel) else model


def _as_spec(name: str, value: BlockSpec | str) -> BlockSpec:
    if isinstance(value, str):
        value = BlockSpec(value)
    if not isinstance(value, BlockSpec):
        raise TypeError(f"spec for {name!r} must be a BlockSpec or a block kind name, got {type(value).__name__}")
    BLOCKS.get(value.block)
    return value


def swap(
    model: nn.Module,
    spec: Mapping[str, BlockSpec | str],
    example_inputs: Sequence[Any],
    *,
    on_unconverged: str = "error",
) -> nn.Module:
    """Replaces each target in `spec` by the block its builder makes, in place; returns the model.

    A spec value is a `BlockSpec` or just a kind's name ("residual"). Builders come from
    `deq_plugin.blocks.BLOCKS`; each replacement is moved to the original's device and dtype, must
    reproduce its output shape on `example_inputs`, and every DEQ layer in it is solved there once:
    one that does not converge raises (on_unconverged="error") or warns ("warn"), naming the layer.
    A model wrapped in `nn.DataParallel` is swapped with the wrapped model's own names.
    """
    if on_unconverged not in UNCONVERGED_MODES:
        raise ValueError(f"unknown on_unconverged {on_unconverged!r}; valid: {list(UNCONVERGED_MODES)}")
    model_to_swap = _unwrap(model)
    spec = {name: _as_spec(name, value) for name, value in spec.items()}
    targets = {name: _resolve(model_to_swap, name) for name in spec}
    io = _record_io(model_to_swap, targets, example_inputs)
    # Replace slices from the highest index down so earlier indices stay valid.
    order = sorted(targets, key=lambda n: (targets[n].path, -(targets[n].start or 0)))
    done: list[tuple[_Target, nn.Module]] = []
    for name in order:
        target = targets[name]
        # Builders rebuild the original's own layers in place; a copy restores them if any target fails.
        backup = copy.deepcopy(target.modules())
        try:
            block = _build(name, target, spec[name], io[name], on_unconverged)
        except BaseException:
            _put_back(model_to_swap, target, backup, installed=False)
            for swapped_target, swapped_backup in reversed(done):
                _put_back(model_to_swap, swapped_target, swapped_backup, installed=True)
            raise
        _install(model_to_swap, target, block)
        done.append((target, backup))
    return model


def _build(name: str, target: _Target, block_spec: BlockSpec, io: tuple, on_unconverged: str) -> nn.Module:
    """The checked replacement of one target: built, moved, fitted, converged, warm state cleared."""
    original = target.modules()
    reference = next(iter(p for p in original.parameters()), None)
    inputs, output = io
    builder = BLOCKS.get(block_spec.block)
    options = dict(block_spec.options)
    if "example_inputs" in inspect.signature(builder).parameters:
        options["example_inputs"] = inputs
    block = builder(original, name=name, **options)
    if reference is not None:
        block = block.to(device=reference.device, dtype=reference.dtype)
    _check_fit(name, block, inputs, output)
    _check_converged(name, block, on_unconverged)
    for deq in (m for m in block.modules() if isinstance(m, DEQ)):
        deq.reset_warm_start()  # the probe must not seed the first real solve
    return block


def _put_back(model: nn.Module, target: _Target, backup: nn.Module, installed: bool) -> None:
    """Restores a target's original layers from their copy (in place of its block if `installed`)."""
    if target.start is None:
        _install(model, target, backup)
        return
    stop = target.start + 1 if installed else target.stop
    layers = list(target.parent)
    layers[target.start : stop] = list(backup)
    _refill(target.parent, layers)


def layer_stats(model: nn.Module) -> dict[str, DEQStats | None]:
    """Each DEQ layer's latest `DEQStats` (None before its first forward), keyed by the layer's name.

    Swapped layers are named by their swap target; a name two layers share is replaced by their
    module paths.
    """
    layers = [(path, m) for path, m in _unwrap_any(model).named_modules() if isinstance(m, DEQ)]
    names = [deq.name for _, deq in layers]
    return {(deq.name if names.count(deq.name) == 1 else path): deq.stats for path, deq in layers}


def _unwrap_any(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else model


def _install(model: nn.Module, target: _Target, block: nn.Module) -> None:
    if target.start is not None:
        layers = list(target.parent)
        layers[target.start : target.stop] = [block]
        _refill(target.parent, layers)
        return
    parent_path, _, attr = target.path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, block)


def _refill(stack: nn.Sequential, layers: list[nn.Module]) -> None:
    for key in list(stack._modules):
        del stack._modules[key]
    for i, layer in enumerate(layers):
        stack.add_module(str(i), layer)
