"""Reading a command line's config before absl does: the config file, its `--config.<field>` names, and
the `--mode=show` listing. Mistakes are `CommandLineError`s that say what would be valid."""
from __future__ import annotations

import difflib
import importlib.util
import pathlib
import re
from typing import Sequence

from ml_collections import ConfigDict

from configs.field_help import FIELD_HELP

CONFIG_FOLDER = pathlib.Path(__file__).resolve().parent
CONFIG_FLAG = "--config"
SHOW_VALUE_COLUMNS = 48  # --mode=show aligns the help of fields whose "field = value" is shorter


class CommandLineError(ValueError):
    """A mistake on the command line or in the files it names; main.py prints it without a traceback."""


def experiment_configs() -> list[str]:
    """The experiment config files in configs/ (those defining get_config), as paths relative to the repository."""
    return sorted(
        f"configs/{path.name}" for path in CONFIG_FOLDER.glob("*.py")
        if re.search(r"^def get_config\(", path.read_text(), flags=re.MULTILINE)
    )


def config_path_from_argv(args: Sequence[str]) -> str | None:
    """The value of --config in `args` ('--config=PATH' or '--config PATH'), or None."""
    for i, arg in enumerate(args):
        if arg.startswith(CONFIG_FLAG + "="):
            return arg[len(CONFIG_FLAG) + 1:]
        if arg == CONFIG_FLAG and i + 1 < len(args):
            return args[i + 1]
    return None


def load_config_file(path: str) -> ConfigDict:
    """get_config() of the config file at `path`; a missing file or one without get_config lists the valid ones."""
    file = pathlib.Path(path).expanduser()
    configs = experiment_configs()
    choices = ", ".join(configs)
    if not file.is_file():
        closest = difflib.get_close_matches(path, configs, n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]!r}?" if closest else ""
        raise CommandLineError(f"config file {path!r} not found{hint}\n  experiment configs: {choices}")
    spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise CommandLineError(f"config file {path!r} defines no get_config()\n  experiment configs: {choices}")
    return module.get_config()


def config_fields(config: ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf field of `config` by dotted name, in definition order."""
    fields = []
    for key, value in config.items():
        if isinstance(value, ConfigDict):
            fields.extend(config_fields(value, f"{prefix}{key}."))
        else:
            fields.append(f"{prefix}{key}")
    return fields


def _has_field(config: ConfigDict, dotted: str) -> bool:
    node = config
    for name in dotted.split("."):
        if not isinstance(node, ConfigDict) or name not in node:
            return False
        node = node[name]
    return not isinstance(node, ConfigDict)


def unknown_field_message(config: ConfigDict, dotted: str, config_path: str) -> str:
    """Says that `dotted` is no field of `config`: the closest field, the valid fields where it went
    wrong, and the command that lists them all."""
    fields = config_fields(config)
    closest = difflib.get_close_matches(dotted, fields, n=1, cutoff=0.6)
    lines = [f"unknown config field {dotted!r}" + (f"; did you mean {closest[0]!r}?" if closest else "")]
    node, section = config, []
    for name in dotted.split(".")[:-1]:
        if not isinstance(node.get(name), ConfigDict):
            break
        node, section = node[name], [*section, name]
    keys = ", ".join(sorted(node.keys()))
    lines.append(f"  fields of {'.'.join(section) or 'the config'}: {keys}")
    lines.append(f"  every field with its help: python main.py --config={config_path} --mode=show")
    return "\n".join(lines)


def check_override_fields(config: ConfigDict, args: Sequence[str], config_path: str) -> None:
    """Raises CommandLineError for the first `--config.<field>` in `args` that `config` does not have."""
    for arg in args:
        if not arg.startswith(CONFIG_FLAG + "."):
            continue
        dotted = arg[len(CONFIG_FLAG) + 1:].split("=", 1)[0]
        *section, key = dotted.split(".")
        negated = ".".join([*section, key[2:]]) if key.startswith("no") else None  # absl's --config.x.noflag
        if _has_field(config, dotted) or (negated and _has_field(config, negated)):
            continue
        raise CommandLineError(unknown_field_message(config, dotted, config_path))


def describe_config(config: ConfigDict, layer_names: Sequence[str] | None, layers_note: str = "") -> str:
    """The resolved config, one 'field = value  # help' line per field, then the DEQ layers the model
    offers (`layer_names`; None = unknown, with `layers_note` saying why)."""
    rows = []
    for field in config_fields(config):
        value = config
        for name in field.split("."):
            value = value[name]
        rows.append((f"{field} = {value!r}", FIELD_HELP.get(field, "(no help text)")))
    width = min(max(len(left) for left, _ in rows), SHOW_VALUE_COLUMNS)
    text = [f"{left:<{width}}  # {help_text}" for left, help_text in rows]
    text.append("")
    if layer_names is None:
        text.append(f"deq.layers choices of model {config.model.name!r}: unknown ({layers_note})")
    elif not layer_names:
        text.append(f"deq.layers choices of model {config.model.name!r}: none (this model offers no DEQ layers)")
    else:
        text.append(f"deq.layers choices of model {config.model.name!r}: {', '.join(layer_names)} "
                    "(or 'all', or '' for none)")
    text.append("Set a field with --config.<field>=<value>, e.g. --config.deq.layers=all.")
    return "\n".join(text)
