"""Where the host models meet the plugin: which layers of each model can become DEQ blocks.

Each module here registers, for one host model, a function that lists its swappable layers by a
user-facing name (`LayerPatch`: the module paths it covers, the block builder and its default
options). `apply_patch` turns the layers named in `config.deq.layers` into DEQ blocks with
`deq_plugin.swap`, using the global `config.deq` options overridden per layer by
`config.deq.per_layer` ("layer:key=value,key=value;other:key=value").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ml_collections import ConfigDict
from torch import nn

from deq_plugin import DEQ, BlockSpec, swap
from score_matching.registry import Registry

# config.deq fields handed to every block builder (the rest of config.deq selects layers).
DEQ_OPTION_FIELDS = (
    "solver", "tol", "max_iter", "grad", "phantom_steps", "phantom_tau", "warm_start", "norm", "norm_lambda",
    "check_every",
)
PATCHES: Registry[Callable[[nn.Module], dict[str, "LayerPatch"]]] = Registry(
    "patch", modules=("patches.ncsn", "patches.density", "patches.vae"))


@dataclass
class LayerPatch:
    """A user-facing layer name's module paths, the block that replaces them, and its defaults."""

    targets: list[str]
    block: str
    options: dict[str, Any] = field(default_factory=dict)


def register_patch(model_name: str):
    """Decorator registering `fn(model) -> {layer name: LayerPatch}` for a host model name."""
    return PATCHES.register(model_name)


def swappable_layers(model: nn.Module, model_name: str) -> dict[str, LayerPatch]:
    """The layers of `model` that may become DEQ blocks, by name (empty if the model has no patch)."""
    return PATCHES.get(model_name)(model) if model_name in PATCHES else {}


def parse_layers(spec: str, valid: Sequence[str]) -> list[str]:
    """'' -> none, 'all' -> every layer, else a comma-separated list checked against `valid`."""
    spec = spec.strip()
    if not spec:
        return []
    names = list(valid) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown DEQ layer(s) {unknown}; valid: {list(valid)} (or 'all', or '' for none)")
    return names


def _convert(key: str, text: str, like: Any) -> Any:
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"per-layer option {key}={text!r} must be true or false")
        return text.lower() in ("true", "1")
    try:
        return type(like)(text)
    except ValueError:
        raise ValueError(f"per-layer option {key}={text!r} must be a {type(like).__name__}") from None


def parse_per_layer(spec: str, deq_config: ConfigDict, layers: dict[str, LayerPatch]) -> dict[str, dict[str, Any]]:
    """Parses 'layer:key=value,key=value;layer2:...' into typed per-layer option overrides.

    A key is one of the global DEQ options (DEQ_OPTION_FIELDS) or one of the layer's own block
    options (its `LayerPatch.options`, e.g. the NCSN block's `keep_norms`); values take the type
    of the option's default.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for chunk in filter(None, (c.strip() for c in spec.split(";"))):
        layer, sep, body = chunk.partition(":")
        layer = layer.strip()
        if not sep or layer not in layers:
            raise ValueError(f"per-layer entry {chunk!r} must be 'layer:key=value,...' with layer in {list(layers)}")
        defaults = {**{key: deq_config[key] for key in DEQ_OPTION_FIELDS}, **layers[layer].options}
        for item in filter(None, (i.strip() for i in body.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in defaults:
                raise ValueError(f"per-layer option {item!r} for {layer!r}: key must be one of {sorted(defaults)}")
            overrides.setdefault(layer, {})[key] = _convert(key, value.strip(), defaults[key])
    return overrides


def layer_options(deq_config: ConfigDict, layer: LayerPatch, overrides: dict[str, Any]) -> dict[str, Any]:
    """The builder options of one layer: patch defaults < global config.deq < per-layer overrides."""
    options = dict(layer.options)
    options.update({key: deq_config[key] for key in DEQ_OPTION_FIELDS})
    options.update(overrides)
    if options["check_every"] == 0:  # 0 means: let the DEQ choose by device
        options["check_every"] = None
    return options


def apply_patch(model: nn.Module, model_name: str, deq_config: ConfigDict, example_inputs: Sequence[Any]) -> nn.Module:
    """Turns the layers selected by `deq_config` into DEQ blocks; with none selected, a no-op."""
    layers = swappable_layers(model, model_name)
    selected = parse_layers(deq_config.layers, list(layers))
    overrides = parse_per_layer(deq_config.per_layer, deq_config, layers)  # validated even when unused
    if not selected:
        return model
    spec: dict[str, BlockSpec] = {}
    for name in selected:
        layer = layers[name]
        options = layer_options(deq_config, layer, overrides.get(name, {}))
        for target in layer.targets:
            if target in spec:
                raise ValueError(f"module {target!r} is selected twice (through layer {name!r}); select it once")
            spec[target] = BlockSpec(layer.block, options)
    return swap(model, spec, example_inputs, on_unconverged=deq_config.on_unconverged)


def deq_layer_stats(model: nn.Module) -> dict[str, float]:
    """Solver statistics of every DEQ layer after the latest forward, keyed 'deq/<layer>/<stat>', and
    the running totals of its non-converged forward and backward solves ('.../unconverged_*_total')."""
    stats: dict[str, float] = {}
    for module in model.modules():
        if isinstance(module, DEQ) and module.stats is not None:
            prefix = f"deq/{module.name}"
            stats[f"{prefix}/iterations"] = float(module.stats.n_iter)
            stats[f"{prefix}/rel_residual"] = module.stats.rel_residual
            stats[f"{prefix}/converged"] = float(module.stats.converged)
            if module.stats.backward_n_iter is not None:
                stats[f"{prefix}/backward_iterations"] = float(module.stats.backward_n_iter)
            for direction, count in module.unconverged_solves.items():
                stats[f"{prefix}/unconverged_{direction}_total"] = float(count)
    return stats
