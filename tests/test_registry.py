"""The host's registry helper and the plugin's own copy behave the same; validation takes its choices
from the registries and option lists the code uses."""
import sys

import pytest

from configs.defaults import dkef, ncsn, nice, vae
from configs.ncsn_deq import get_config
from configs.validate import choice_fields, validate_config
from deq_plugin import SOLVERS
from deq_plugin.registry import Table
from score_matching.registry import Registry

FAMILIES = (ncsn.get_config, dkef.get_config, nice.get_config, vae.get_config)


@pytest.mark.parametrize("registry_class", [Registry, Table])
def test_both_registries_guard_duplicates_and_list_valid_names(registry_class):
    registry = registry_class("widget")
    assert registry.register("b")(2) == 2 and registry.register("a")(1) == 1
    assert registry.get("a") == 1 and registry.names() == ["a", "b"]
    with pytest.raises(KeyError, match="widget 'a' is already registered"):
        registry.register("a")(3)
    assert registry.get("a") == 1  # the first registration stands
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid: \['a', 'b'\]"):
        registry.get("c")


@pytest.mark.parametrize("registry_class", [Registry, Table])
def test_both_registries_take_a_redefinition_and_replace_only_on_request(registry_class):
    registry = registry_class("widget")

    def builder():
        return "first"

    registry.register("w")(builder)
    first = builder

    def builder():  # noqa: F811 - a re-run notebook cell: same module and qualified name
        return "second"

    registry.register("w")(builder)
    assert registry.get("w") is builder and registry.get("w") is not first

    def other():
        return "other"

    with pytest.raises(KeyError, match="replace=True"):
        registry.register("w")(other)
    assert registry.register("w", replace=True)(other) is other and registry.get("w") is other


def test_a_registry_imports_its_modules_on_first_look_up(tmp_path, monkeypatch):
    (tmp_path / "registry_probe_holder.py").write_text("REGISTRY = None\n")
    (tmp_path / "registry_probe_entries.py").write_text(
        "import registry_probe_holder\nregistry_probe_holder.REGISTRY.register('late')('entry')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import registry_probe_holder

    registry_probe_holder.REGISTRY = Registry("probe", modules=("registry_probe_entries",))
    try:
        assert "registry_probe_entries" not in sys.modules
        assert "late" in registry_probe_holder.REGISTRY and registry_probe_holder.REGISTRY.get("late") == "entry"
        assert registry_probe_holder.REGISTRY.names() == ["late"]  # imported once: no duplicate error
    finally:
        sys.modules.pop("registry_probe_entries", None)
        sys.modules.pop("registry_probe_holder", None)


def test_validation_accepts_every_choice_the_code_offers_and_names_them_on_a_bad_value():
    # e.g. the forward-mode Hessian trace, which a hand-typed list once lacked
    assert "forward" in choice_fields()["loss.trace"]
    for field, valid in choice_fields().items():
        section, _, key = field.rpartition(".")
        family = next(f for f in FAMILIES if key in (f()[section] if section else f()))
        for value in valid:
            config = family()
            (config[section] if section else config)[key] = value
            validate_config(config)
    config = get_config()
    config.deq.solver = "newton"
    with pytest.raises(ValueError, match=r"config.deq.solver='newton' is not valid; choose one of \['anderson', 'picard'") as error:
        validate_config(config)
    assert str(error.value).endswith(f"{SOLVERS.names()}")  # other tests may register more solvers
