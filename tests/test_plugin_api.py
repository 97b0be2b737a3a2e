"""deq_plugin as a package of its own: torch-only imports, its public API, its registry, its docs."""
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import deq_plugin
from deq_plugin.registry import Table

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "plugin.md"

def torch_only_site(directory: pathlib.Path) -> pathlib.Path:
    """A site directory holding links to torch, the distributions torch requires (transitively) and
    deq_plugin, nothing else: what a fresh environment with only torch installed would hold."""
    wanted, seen = ["torch"], set()
    while wanted:
        name = wanted.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional requirement that is not installed
        for req in dist.requires or []:
            if "extra ==" not in req:
                wanted.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
        for file in dist.files or []:
            top = pathlib.Path(file).parts[0]
            target = pathlib.Path(dist.locate_file(top))
            link = directory / top
            if top != ".." and target.exists() and not link.exists():
                link.symlink_to(target)
    (directory / "deq_plugin").symlink_to(REPO / "deq_plugin")
    return directory


# Runs with `python -I -S`: no site-packages, only the standard library and the torch-only site.
# A meta path finder also records (and refuses) any import of the host's packages.
BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    sys.path.append({site!r})

    class RefuseHost(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in ("score_matching", "patches", "configs", "benchmarks", "main"):
                raise ModuleNotFoundError(f"blocked module {{name!r}}")
            return None

    sys.meta_path.insert(0, RefuseHost())
    import torch
    from torch import nn
    import deq_plugin

    torch.manual_seed(0)
    deq = deq_plugin.DEQ(deq_plugin.DenseCell(6), grad="implicit", tol=1e-8, max_iter=200).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    (score,) = torch.autograd.grad(deq(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(score.pow(2).sum(), deq.cell.linear.parametrizations.weight.original)
    assert torch.isfinite(second).all() and second.abs().sum() > 0

    model = nn.Sequential(nn.Linear(4, 8), nn.Softplus(), nn.Sequential(nn.Linear(8, 8), nn.Softplus()))
    deq_plugin.swap(model, {{"2": "mlp_stack"}}, (torch.randn(5, 4),))
    assert deq_plugin.layer_stats(model)["2"].converged
    print("OK")
    """
)


def run_torch_only(script: str, site: pathlib.Path) -> subprocess.CompletedProcess:
    """Runs `script` in an interpreter that sees the standard library and `site` only."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=300, cwd=site,
    )


def test_the_plugin_works_with_every_third_party_module_but_torch_blocked(tmp_path):
    site = torch_only_site(tmp_path)
    result = run_torch_only(BLOCKED_IMPORT_SCRIPT.format(site=str(site)), site)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


@pytest.mark.parametrize("stray", ["numpy", "score_matching"])
def test_a_stray_import_fails_there(tmp_path, stray):
    site = torch_only_site(tmp_path)
    script = BLOCKED_IMPORT_SCRIPT.format(site=str(site)).replace("import deq_plugin\n", f"import deq_plugin\nimport {stray}\n", 1)
    result = run_torch_only(script, site)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr and stray in result.stderr


def test_version_and_own_distribution_metadata():
    assert re.fullmatch(r"\d+\.\d+\.\d+", deq_plugin.__version__)
    text = (REPO / "deq_plugin" / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*)\]$", text, re.M).group(1)
    assert [d.strip().strip('"') for d in dependencies.split(",")] == ["torch>=2.2"]
    assert 'version = {attr = "deq_plugin.__version__"}' in text


def public_names() -> list[str]:
    return list(deq_plugin.__all__)


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_is_documented_and_tested(name):
    obj = getattr(deq_plugin, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
    api = DOCS.read_text().split("## API", 1)[1]
    assert re.search(rf"^- `{re.escape(name)}`", api, re.M), f"{name} is not listed in the docs' API section"
    own = pathlib.Path(__file__).name
    tests = [p for p in (REPO / "tests").glob("test_*.py") if p.name != own]
    assert any(re.search(rf"\b{re.escape(name)}\b", p.read_text()) for p in tests), f"no test uses {name}"


def test_the_docs_api_section_lists_exactly_the_public_names():
    api = DOCS.read_text().split("## API", 1)[1]
    listed = re.findall(r"^- `([A-Za-z_]+)`", api, re.M)
    assert sorted(listed) == sorted(public_names())


def test_registering_the_same_function_again_is_harmless_and_a_different_one_is_an_error():
    table: Table = Table("thing")
    source = "def build(original):\n    return original\n"
    first, second = {}, {}
    exec(source, first)  # a notebook cell, run twice
    exec(source, second)
    table.register("build")(first["build"])
    table.register("build")(first["build"])
    table.register("build")(second["build"])
    assert table.get("build") is second["build"]

    def other(original):
        return original

    with pytest.raises(KeyError, match="thing 'build' is already registered to .*build; .*replace=True"):
        table.register("build")(other)
    table.register("build", replace=True)(other)
    assert table.get("build") is other
    with pytest.raises(ValueError, match="unknown thing 'nope'; valid: \\['build'\\]"):
        table.get("nope")


def test_the_docs_snippets_run(tmp_path, monkeypatch):
    """Every ```python block of docs/plugin.md runs, in order, with the stand-ins as the user's models."""
    from benchmarks.codebase_standins import DDPMStandin, NCSNv2Standin

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save({"model": NCSNv2Standin().state_dict()}, "ncsnv2.pth")
    torch.save({"model": DDPMStandin().state_dict()}, "ddpm.pth")
    namespace = {
        "NCSNv2": lambda config: NCSNv2Standin(),
        "DDPMModel": lambda config: DDPMStandin(),
        "config": None,
        "image_batch": lambda: torch.rand(4, 3, 16, 16),
    }
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)
    assert all(stats.converged for stats in deq_plugin.layer_stats(namespace["model"]).values())
    importlib.import_module("deq_plugin")  # the snippets left the package importable


def test_the_docs_measurements_are_the_committed_benchmark_result():
    import json

    result = json.loads((REPO / "benchmarks" / "results" / "plugin-cpu.json").read_text())
    docs = DOCS.read_text()
    reference = next(v for v in result["variants"] if v["name"] == "unswapped")
    for variant in result["variants"]:
        iterations = f"{variant['deq_iters']:.0f}" if "deq_iters" in variant else "—"
        row = (
            f"| {variant['name']} | {variant['swapped_blocks']} | {variant['peak_memory_mib']:.1f} | "
            f"{variant['step_ms']:.1f} | {variant['step_ms'] / reference['step_ms']:.2f} | {iterations} |"
        )
        assert row in docs, row
