"""main.py as a user meets it: a mistake is a few lines on stderr (exit status 2, no traceback unless
--debug), --mode=show lists every field with its help, and every experiment config field has help."""
import importlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from configs.command_line import config_fields, experiment_configs
from configs.field_help import FIELD_HELP

REPO = pathlib.Path(__file__).resolve().parents[1]
# A DKEF on the paper's 100-d Gaussian needs no data files; tiny sizes make any work quick.
GAUSSIAN_DKEF = ["--config=configs/dkef_deq.py", "--config.data.dataset=gaussian100", "--config.model.n_inducing=8",
                 "--config.model.hidden=8", "--config.model.latent=8", "--config.training.batch_size=8",
                 "--config.data.max_train=64", "--config.data.max_eval=16", "--config.eval.batch_size=16",
                 "--config.eval.is_samples=2000", "--config.device=cpu"]


def run_main(*args, env_extra=None):
    env = {key: value for key, value in os.environ.items() if key != "SCORE_MATCHING_DEBUG"}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)


def first_error_line(result, after_logs: bool = False) -> str:
    """The first line of stderr (with `after_logs`, the first after the log lines of work done before
    the mistake showed); checks the exit status and that there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    if after_logs:
        lines = [line for line in lines if not re.match(r"[IWEF]\d{4} ", line)]
    return lines[0]


def test_a_misspelt_field_names_the_closest_field_and_its_section(tmp_path):
    result = run_main("--config=configs/dkef_deq.py", f"--workdir={tmp_path}", "--config.deq.layer=all")
    assert first_error_line(result) == "error: unknown config field 'deq.layer'; did you mean 'deq.layers'?"
    assert "fields of deq: check_every, grad, layers," in result.stderr
    assert "python main.py --config=configs/dkef_deq.py --mode=show" in result.stderr
    result = run_main("--config=configs/dkef_deq.py", f"--workdir={tmp_path}", "--config.trainin.n_iters=5")
    assert first_error_line(result) == "error: unknown config field 'trainin.n_iters'; did you mean 'training.n_iters'?"
    assert not any(tmp_path.iterdir())


def test_a_missing_config_file_lists_the_experiment_configs(tmp_path):
    result = run_main("--config=configs/ncsn_dq.py", f"--workdir={tmp_path}")
    assert first_error_line(result) == "error: config file 'configs/ncsn_dq.py' not found; did you mean 'configs/ncsn_deq.py'?"
    assert "configs/dkef_baseline.py" in result.stderr and "command_line" not in result.stderr
    result = run_main(f"--workdir={tmp_path}")
    assert first_error_line(result) == "error: --config is required, e.g. --config=configs/ncsn_deq.py"


@pytest.mark.parametrize("flag, expected", [
    ("--config.deq.tol=abc", "error: flag --config.deq.tol=abc: could not convert string to float: 'abc'"),
    ("--mode=fit", "error: flag --mode=fit: value should be one of <train|eval|sample|show>"),
    ("--no_such_flag=1", "error: Unknown command line flag 'no_such_flag'"),
])
def test_bad_flag_values_are_one_line(tmp_path, flag, expected):
    assert first_error_line(run_main("--config=configs/dkef_deq.py", f"--workdir={tmp_path}", flag)) == expected


def test_a_missing_workdir_says_how_to_give_one():
    result = run_main("--config=configs/dkef_deq.py")
    assert first_error_line(result) == (
        "error: --workdir is required for --mode=train, e.g. python main.py --config=configs/dkef_deq.py "
        "--workdir=runs/my_run")


@pytest.fixture(scope="module")
def after_torch_loads(tmp_path_factory):
    """The cases that fail once main() runs (and torch loads), run side by side to keep the suite fast:
    name -> (the result, the folder the case ran in)."""
    root = tmp_path_factory.mktemp("cases")
    (root / "empty_data_root").mkdir()
    (root / "a_file").write_text("not a folder")
    cases = {
        "bad_choice": ("--config=configs/dkef_deq.py", f"--workdir={root / 'bad_choice'}", "--config.deq.solver=newton"),
        "bad_layer": (*GAUSSIAN_DKEF, f"--workdir={root / 'bad_layer'}", "--config.deq.layers=featur"),
        "missing_data": ("--config=configs/dkef_baseline.py", f"--workdir={root / 'missing_data'}",
                         f"--config.data.root={root / 'empty_data_root'}"),
        "no_checkpoint": (*GAUSSIAN_DKEF, f"--workdir={root / 'no_checkpoint'}", "--mode=eval"),
        "unwritable": (*GAUSSIAN_DKEF, f"--workdir={root / 'a_file' / 'run'}"),
        "show": (*GAUSSIAN_DKEF, "--mode=show"),
    }
    env = {key: value for key, value in os.environ.items() if key != "SCORE_MATCHING_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    running = {name: subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, args in cases.items()}
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results, root


def test_a_bad_choice_names_the_valid_ones(after_torch_loads):
    results, root = after_torch_loads
    result = results["bad_choice"]
    assert first_error_line(result) == "error: config.deq.solver='newton' is not valid; choose one of ['anderson', 'picard']"
    assert not (root / "bad_choice").exists()


def test_a_layer_the_model_does_not_offer_lists_those_it_does(after_torch_loads):
    # The layers are known once the model is built from its data: the data's log line comes first.
    assert first_error_line(after_torch_loads[0]["bad_layer"], after_logs=True) == (
        "error: config.deq: unknown DEQ layer(s) ['featur']; valid: ['feature0', 'feature1', 'feature2', 'feature'] "
        "(or 'all', or '' for none)")


def test_missing_data_names_the_file_and_where_it_looked(after_torch_loads):
    results, root = after_torch_loads
    result = results["missing_data"]
    assert first_error_line(result) == (
        f"error: UCI parkinsons file 'parkinsons_updrs.data' not found under data root {root / 'empty_data_root'}; "
        "looked for:")
    assert "put it in <data root>/uci/" in result.stderr


def test_eval_without_a_checkpoint_says_how_to_train_one(after_torch_loads):
    results, root = after_torch_loads
    result, workdir = results["no_checkpoint"], root / "no_checkpoint"
    assert first_error_line(result) == f"error: no checkpoint at {workdir}/checkpoint-meta.pth (eval.checkpoint='latest')"
    train_first = result.stderr.splitlines()[1]
    assert train_first.startswith("  train first with: python main.py --config=configs/dkef_deq.py ")
    assert f"--workdir={workdir}" in train_first and "--mode" not in train_first


def test_an_unwritable_workdir_is_reported_before_any_work(after_torch_loads):
    results, root = after_torch_loads
    result = results["unwritable"]
    assert first_error_line(result).startswith(f"error: workdir '{root / 'a_file' / 'run'}' is not writable (")
    assert "choose another --workdir" in result.stderr


def test_debug_flag_and_environment_restore_the_traceback(tmp_path):
    args = ("--config=configs/dkef_deq.py", f"--workdir={tmp_path}", "--config.deq.layer=all")
    for result in (run_main(*args, "--debug"), run_main(*args, env_extra={"SCORE_MATCHING_DEBUG": "1"})):
        assert result.returncode != 0 and "Traceback" in result.stderr
        assert "CommandLineError: unknown config field 'deq.layer'" in result.stderr


def test_help_points_to_show_and_show_lists_every_field_with_help_and_the_layers(after_torch_loads):
    assert "--mode=show" in run_main("--help").stdout
    result = after_torch_loads[0]["show"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("deq.layers = 'feature'") and line.endswith("# " + FIELD_HELP["deq.layers"])
               for line in lines)
    assert any(line.startswith("data.dataset = 'gaussian100'") for line in lines)  # the resolved value
    config = importlib.import_module("configs.dkef_deq").get_config()
    assert sum(" = " in line and "  # " in line for line in lines) == len(config_fields(config))
    assert "deq.layers choices of model 'dkef': feature0, feature1, feature2, feature (or 'all', or '' for none)" in lines


@pytest.mark.parametrize("path", experiment_configs())
def test_every_field_of_every_experiment_config_has_help(path):
    config = importlib.import_module(f"configs.{pathlib.Path(path).stem}").get_config()
    missing = [field for field in config_fields(config) if not FIELD_HELP.get(field, "").strip()]
    assert not missing, f"{path}: fields without help in configs/field_help.py: {missing}"


def test_field_help_names_no_field_that_no_config_has():
    fields = set()
    for path in experiment_configs():
        fields.update(config_fields(importlib.import_module(f"configs.{pathlib.Path(path).stem}").get_config()))
    assert sorted(set(FIELD_HELP) - fields) == []


def test_eval_checks_the_workdir_first_and_prints_metrics_before_writing(tmp_path, capsys, monkeypatch):
    from main import model_transform_for
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    config = tiny_config("dkef_deq", data__dataset="gaussian100")
    train_losses(config, tmp_path)
    # A workdir that cannot be written to fails before the checkpoint is even loaded.
    loaded = []
    monkeypatch.setattr(run, "load_for_eval", lambda *args: loaded.append(args))
    with monkeypatch.context() as patch:
        patch.setattr(run.tempfile, "TemporaryFile", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "denied")))
        for call in (run.evaluate, run.sample):
            with pytest.raises(run.WorkdirNotWritableError, match="is not writable.*denied"):
                call(config, str(tmp_path), model_transform_for(config), *([lambda m: {}] if call is run.evaluate else []))
    assert loaded == []
    monkeypatch.undo()
    # eval.json cannot be written (a folder is in its place): the metrics are on stdout all the same.
    (tmp_path / "eval.json").mkdir()
    with pytest.raises(IsADirectoryError):
        run.evaluate(config, str(tmp_path), model_transform_for(config), lambda m: {})
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == config.training.n_iters and "log_normaliser" in printed
