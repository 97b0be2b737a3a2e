"""The train/eval loop, configs and patches: golden losses, exact resume, baseline identity."""
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from configs.validate import validate_config
from main import model_transform_for
from score_matching import run
from score_matching.checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from score_matching.datasets import gaussian_dataset
from score_matching.tasks import build_task
from tiny_runs import BASELINES, GOLDEN, tiny_config, train_losses

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_configs_reproduce_their_golden_losses(name, tmp_path):
    golden = json.loads(GOLDEN.read_text())[name]
    losses = train_losses(tiny_config(name), tmp_path)
    assert losses == pytest.approx(golden, rel=1e-4)


@pytest.mark.parametrize("name", ["dkef_deq", "ncsn_deq"])
def test_a_resumed_run_equals_an_uninterrupted_one(name, tmp_path):
    full = train_losses(tiny_config(name, training__n_iters=4), tmp_path / "full")
    first = train_losses(tiny_config(name, training__n_iters=2), tmp_path / "split")
    resumed = train_losses(tiny_config(name, training__n_iters=4), tmp_path / "split")
    assert len(first) == 2 and resumed[:2] == first  # metrics.jsonl is appended to
    assert resumed == full


def _build(config):
    torch.manual_seed(config.seed)
    return build_task(config, torch.device("cpu"), model_transform_for(config)).model


@pytest.mark.parametrize("name", BASELINES)
def test_no_layer_toggled_is_the_baseline_bit_for_bit(name):
    config = tiny_config(name)
    assert config.deq.layers == ""
    torch.manual_seed(config.seed)
    plain = build_task(config, torch.device("cpu"), lambda model, inputs: model).model
    patched = _build(config)
    a, b = plain.state_dict(), patched.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [type(m) for m in plain.modules()] == [type(m) for m in patched.modules()]


@pytest.mark.parametrize(
    "deq_name, base_name, swapped",
    [("ncsn_deq", "ncsn_twores", ["deq_res"]), ("dkef_deq", "dkef_baseline", ["features.0.stack", "features.1.stack", "features.2.stack"]),
     ("nice_deq", "nice_baseline", [f"couplings.{k}.net.stack" for k in range(4)])],
)
def test_deq_configs_differ_from_their_baselines_only_in_swapped_modules(deq_name, base_name, swapped):
    deq_model, base_model = _build(tiny_config(deq_name)), _build(tiny_config(base_name))

    def outside(model):
        return {n: type(m).__name__ for n, m in model.named_modules() if not any(n == s or n.startswith(s + ".") for s in swapped)}

    assert outside(deq_model) == outside(base_model)
    for s in swapped:
        assert type(deq_model.get_submodule(s)).__name__ == "DEQBlock"
        assert type(base_model.get_submodule(s)).__name__ != "DEQBlock"
    base_state = base_model.state_dict()
    for key, value in deq_model.state_dict().items():
        if not any(key.startswith(s + ".") for s in swapped):
            assert torch.equal(value, base_state[key]), key


@pytest.mark.parametrize("name", ["nice_baseline", "dkef_baseline"])
@pytest.mark.parametrize("loss", ["cp", "approx_bp"])
def test_nice_and_dkef_train_with_the_layer_by_layer_losses(name, loss, tmp_path):
    losses = train_losses(tiny_config(name, loss__name=loss), tmp_path)
    assert len(losses) == 3 and all(np.isfinite(losses))


@pytest.mark.parametrize("name", ["nice_deq", "dkef_deq"])
def test_layer_by_layer_losses_reject_a_deq_model_by_name(name):
    from score_matching.losses import approx_backprop_score_matching, curvature_propagation
    from score_matching.models.dkef import FixedAlphaDKEF

    model = _build(tiny_config(name))
    log_density = FixedAlphaDKEF(model, model.alpha) if name == "dkef_deq" else model
    x = torch.randn(2, model.in_features)
    for loss in (curvature_propagation, approx_backprop_score_matching):
        with pytest.raises(TypeError, match=r"unsupported layer DEQBlock: .* need explicit nn\.Linear"):
            loss(log_density, x)


def test_dkef_rejects_maximum_likelihood_by_name():
    with pytest.raises(ValueError, match=r"config.loss.name='mle', valid: \['sm', 'ssm', 'ssm_vr', 'dsm', 'cp', 'approx_bp'\]"):
        _build(tiny_config("dkef_baseline", loss__name="mle"))


def test_eval_writes_eval_json_with_autograd_metrics(tmp_path):
    config = tiny_config("dkef_deq")
    train_losses(config, tmp_path)
    metrics = run.evaluate(config, str(tmp_path), model_transform_for(config), lambda m: {})
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["test_sm_loss"] == pytest.approx(metrics["test_sm_loss"])
    for key in ("test_log_likelihood", "log_normaliser_std_error", "params", "step"):
        assert key in saved
    assert saved["is_proposal"] == "defensive_kde" and np.isfinite(saved["log_normaliser"])
    # The other proposals estimate the same log Z of the same checkpoint, within their errors.
    for proposal in ("defensive_gaussian", "q0"):
        other_config = tiny_config("dkef_deq", eval__is_proposal=proposal)
        other = run.evaluate(other_config, str(tmp_path), model_transform_for(other_config), lambda m: {})
        error = 3 * math.hypot(other["log_normaliser_std_error"], saved["log_normaliser_std_error"])
        assert abs(other["log_normaliser"] - saved["log_normaliser"]) < error
    # Training cost comes from metrics.jsonl: the median of the logged step times, the largest peak.
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if "time_per_step_ms" in r]
    assert saved["train_time_per_step_ms"] == pytest.approx(float(np.median([r["time_per_step_ms"] for r in logged])))
    assert saved["train_peak_memory_mib"] == max(r["peak_memory_mib"] for r in logged) > 0
    assert saved["train_steps_logged"] == config.training.n_iters
    assert saved["train_deq/features.0.stack/iterations"] >= 1


def test_unknown_layers_and_options_list_the_valid_choices():
    config = tiny_config("dkef_deq", deq__layers="featur")
    with pytest.raises(ValueError, match=r"unknown DEQ layer\(s\) \['featur'\].*'feature0'.*'feature'"):
        _build(config)
    config = tiny_config("dkef_deq", deq__per_layer="feature:solver=anderson,toll=1")
    with pytest.raises(ValueError, match="key must be one of"):
        _build(config)
    config = tiny_config("dkef_deq", deq__solver="broyden")
    with pytest.raises(ValueError, match=r"deq.solver='broyden'.*anderson.*picard"):
        validate_config(config)
    config = tiny_config("dkef_deq", model__stack_init="xavier")
    with pytest.raises(ValueError, match=r"model.stack_init='xavier'.*he.*torch"):
        validate_config(config)
    config = tiny_config("nice_deq", eval__sm_loss_rows=-5)
    with pytest.raises(ValueError, match=r"eval.sm_loss_rows=-5 must be >= 0"):
        validate_config(config)


def test_validate_config_checks_the_importance_sampling_options():
    validate_config(tiny_config("dkef_deq", eval__is_proposal="q0"))
    with pytest.raises(ValueError, match=r"eval.is_proposal='kde'.*'defensive_kde', 'q0'"):
        validate_config(tiny_config("dkef_deq", eval__is_proposal="kde"))
    with pytest.raises(ValueError, match=r"eval.is_kde_centres=0 must be >= 1"):
        validate_config(tiny_config("dkef_deq", eval__is_kde_centres=0))


def test_per_layer_options_reach_each_layer():
    config = tiny_config("dkef_deq", deq__layers="feature0,feature2", deq__per_layer="feature2:solver=anderson,tol=1e-6,warm_start=true")
    model = _build(config)
    assert type(model.features[1].stack).__name__ == "MLPStack"
    first, last = model.features[0].stack.deq, model.features[2].stack.deq
    assert (first.solver, first.tol, first.warm_start) == ("picard", config.deq.tol, False)
    assert (last.solver, last.tol, last.warm_start) == ("anderson", 1e-6, True)


def test_checkpoints_are_atomic_and_loading_is_strict(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"a": torch.ones(2)})
    with pytest.raises(Exception):
        save_checkpoint(path, {"a": lambda: None})  # unpicklable: the old file must survive
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert list(tmp_path.iterdir()) == [path]
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        load_state_strict(model, {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}, "model")


def test_checkpoints_from_before_the_spectral_estimate_was_saved_still_load():
    model = _build(tiny_config("ncsn_deq"))
    state = model.state_dict()
    estimates = [k for k in state if k.endswith("parametrizations.weight.0.v")]
    assert estimates  # the DEQ-ResBlock's two spectrally normalised convolutions
    load_state_strict(_build(tiny_config("ncsn_deq")), {k: v for k, v in state.items() if k not in estimates}, "model")
    with pytest.raises(KeyError, match="missing keys .*conv1.parametrizations.weight.original"):
        load_state_strict(_build(tiny_config("ncsn_deq")), {k: v for k, v in state.items() if "conv1.parametrizations" not in k}, "model")


def test_main_rejects_bad_flags_before_any_work(tmp_path):
    def main(*flags):
        return subprocess.run([sys.executable, "main.py", "--config=configs/dkef_deq.py", f"--workdir={tmp_path}", *flags],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    result = main("--config.deq.grad=jfb")
    assert result.returncode != 0 and "deq.grad='jfb'" in result.stderr and "implicit" in result.stderr
    result = main("--config.deq.nonexistent=1")
    assert result.returncode != 0 and "nonexistent" in result.stderr
    result = main("--mode=fit")
    assert result.returncode != 0 and "train" in result.stderr and "sample" in result.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_sample_mode_writes_a_grid_and_arrays(tmp_path):
    import numpy as np

    config = tiny_config("ncsn_deq")
    train_losses(config, tmp_path)
    folder = run.sample(config, str(tmp_path), model_transform_for(config))
    arrays = np.load(folder / "sample_step_3.npz")["samples"]
    assert arrays.shape == (4, 1, 28, 28) and 0 <= arrays.min() and arrays.max() <= 1
    assert (folder / "sample_step_3.png").stat().st_size > 0


def test_every_paper_row_is_a_valid_config():
    from configs.paper_rows import ROWS, row_config

    # tables 1, 2 and 3 (each DKEF data set: the paper's rows plus the authors' recipe, the linear DEQ and
    # the 16-layer DKEF with RMSprop), the DKEF ablation's six intermediate steps, tables 4 and 5
    assert len(ROWS) == 2 * 4 + 3 * (9 + 3) + 2 * (4 + 3) + 6 + 7 + 3
    for name in ROWS:
        validate_config(row_config(name))


def test_block_specific_options_are_per_layer_options():
    # Kept norm layers void the contraction guarantee (this probe batch does not converge), hence "warn".
    config = tiny_config("ncsn_deq", deq__per_layer="deq_res:keep_norms=true,phantom_steps=3", deq__on_unconverged="warn")
    with pytest.warns(RuntimeWarning, match="did not converge on the example inputs"):
        model = _build(config)
    branch = model.deq_res.deq.cell.block
    assert branch.keep_norms and hasattr(branch, "norm1") and model.deq_res.deq.phantom_steps == 3
    assert not _build(tiny_config("ncsn_deq")).deq_res.deq.cell.block.keep_norms


def task_test_rows(config):
    """The NICE task's test rows under the default "ssm" pre-processing, rebuilt by hand from the
    sliced-score-matching code's recipe: v/255 + (u − ½)/256 with u from config.seed's generator,
    clamped to [1e-3, 1 − 1e-3], then torch.logit."""
    from score_matching.tasks.common import first_rows, load_data

    assert config.data.nice_preprocessing == "ssm"
    images = first_rows(load_data(config).test.images, config.data.max_eval).flatten(1)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(config.seed))
    return torch.logit((images.float() / 255 + (noise - 0.5) / 256).clamp(1e-3, 1 - 1e-3))


def test_nice_preprocessings_and_their_likelihoods():
    """"ssm" reports the logit-space likelihood only (its clamp has no log-determinant); "bijective"
    reports the pixel-space one too, equal to the logit-space one plus the transform's log-determinant."""
    from score_matching.datasets import logit_transform, logit_transform_logdet, uniform_dequantize
    from score_matching.tasks.common import first_rows, load_data

    for preprocessing in ("ssm", "bijective"):
        config = tiny_config("nice_baseline", data__nice_preprocessing=preprocessing)
        task = build_task(config, torch.device("cpu"), model_transform_for(config))
        metrics = task.quick_eval(task.model)
        assert ("test_log_likelihood_pixel_space" in metrics) == (preprocessing == "bijective")
    images = first_rows(load_data(config).test.images, config.data.max_eval).flatten(1)
    pixels = uniform_dequantize(images, torch.Generator().manual_seed(config.seed))
    rows = logit_transform(pixels, config.data.logit_alpha)
    with torch.no_grad():
        logit_ll = task.model(rows)
    assert metrics["test_log_likelihood_logit_space"] == pytest.approx(logit_ll.mean().item(), rel=1e-5)
    pixel_ll = (logit_ll + logit_transform_logdet(pixels, config.data.logit_alpha)).mean().item()
    assert metrics["test_log_likelihood_pixel_space"] == pytest.approx(pixel_ll, rel=1e-5)
    with pytest.raises(ValueError, match=r"data.nice_preprocessing='clamp'.*valid"):
        validate_config(tiny_config("nice_baseline", data__nice_preprocessing="clamp"))


def test_nice_eval_takes_the_sm_loss_on_the_first_sm_loss_rows():
    config = tiny_config("nice_baseline", eval__sm_loss_rows=2)
    task = build_task(config, torch.device("cpu"), model_transform_for(config))
    metrics = task.evaluate(task.model)
    assert metrics["n_test"] == 16 and metrics["n_sm_loss"] == 2
    # Independent reference: ½‖∇ log p‖² + tr ∇² log p from explicit float64 Hessians of the 2 rows.
    model = task.model.double()
    rows = task_test_rows(config)[:2].double()
    values = []
    for row in rows:
        log_p = lambda v: model(v[None])[0]  # noqa: E731
        grad = torch.autograd.functional.jacobian(log_p, row)
        values.append(0.5 * grad.pow(2).sum() + torch.autograd.functional.hessian(log_p, row).diagonal().sum())
    assert metrics["test_sm_loss"] == pytest.approx(torch.stack(values).mean().item(), rel=1e-4)


def test_dkef_trains_with_implicit_deq_layers_and_their_gradients_are_exact():
    """DKEF's α fit takes nested forward-mode derivatives of its feature nets; with grad='implicit'
    the DEQ's tangents are implicit fixed points too. The loss and every parameter gradient must match
    autograd through a float64 solve to 1e-12 (the unrolled reference). The exact-SM Hessian trace
    is the batched one, so the adjoint solves also run under vmap."""
    from deq_plugin import DEQ, exact_derivatives

    config = tiny_config("dkef_deq", deq__grad="implicit", loss__trace="batched")
    task = build_task(config, torch.device("cpu"), model_transform_for(config))
    model = task.model.double()
    deqs = [m for m in model.modules() if isinstance(m, DEQ)]
    assert deqs and all(deq.grad == "implicit" for deq in deqs)
    for deq in deqs:
        deq.tol = deq.backward_tol = 1e-12
        deq.max_iter = deq.backward_max_iter = 500
    x = task.get_batch(torch.arange(8), 0).double()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads():
        torch.manual_seed(0)
        loss = task.loss_fn(model, x)
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    implicit_loss, implicit_grads = loss_and_grads()
    with exact_derivatives(model, tol=1e-12):
        unrolled_loss, unrolled_grads = loss_and_grads()
    torch.testing.assert_close(implicit_loss, unrolled_loss, rtol=1e-9, atol=1e-9)
    deq_params = {id(p) for deq in deqs for p in deq.parameters()}
    assert any(id(p) in deq_params and g is not None and g.abs().sum() > 0 for p, g in zip(params, unrolled_grads))
    for implicit_grad, unrolled_grad in zip(implicit_grads, unrolled_grads):
        assert (implicit_grad is None) == (unrolled_grad is None)
        if unrolled_grad is not None:
            torch.testing.assert_close(implicit_grad, unrolled_grad, rtol=1e-7, atol=1e-9)


def test_training_summary_stops_at_the_evaluated_step(tmp_path):
    """A checkpoint evaluated after the run trained on reports only the training that produced it."""
    from score_matching.metrics_log import training_summary

    rows = [{"step": 100, "time_per_step_ms": 10.0, "peak_memory_mib": 5.0, "deq/x/iterations": 4.0},
            {"step": 150, "eval/test_sm_loss": -1.0},
            {"step": 200, "time_per_step_ms": 30.0, "peak_memory_mib": 6.0, "deq/x/iterations": 6.0},
            {"step": 300, "time_per_step_ms": 90.0, "peak_memory_mib": 50.0, "deq/x/iterations": 20.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_summary(tmp_path, up_to_step=200) == {
        "train_time_per_step_ms": 20.0, "train_peak_memory_mib": 6.0, "train_steps_logged": 200,
        "train_deq/x/iterations": 5.0,
    }
    assert training_summary(tmp_path)["train_peak_memory_mib"] == 50.0


def _val_log(workdir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]


def test_validation_keeps_the_best_checkpoint_and_patience_stops_training(tmp_path):
    config = tiny_config("dkef_baseline", training__n_iters=12, training__val_freq=1, training__patience=2,
                         optim__lr=0.3)
    train_losses(config, tmp_path)
    log = _val_log(tmp_path)
    # The expected stop, from the logged sequence alone: the first step whose best is >= 2 steps old.
    best_step, best, stop = 0, math.inf, None
    for step, value in log:
        if value < best:
            best_step, best = step, value
        elif step - best_step >= 2:
            stop = step
            break
    assert stop is not None and log[-1][0] == stop < 12  # this learning rate makes the loss bounce
    assert min(value for _, value in log) == best
    # checkpoints/best.pth holds the weights of the best step: its validation loss is the logged minimum.
    eval_config = tiny_config("dkef_baseline", eval__checkpoint="best")
    task, _, step = run.load_for_eval(eval_config, str(tmp_path), model_transform_for(eval_config))
    assert step == best_step and task.val_loss(task.model) == pytest.approx(best, rel=1e-5)
    # A stopped run does not train on when restarted.
    lines = (tmp_path / "metrics.jsonl").read_text()
    train_losses(config, tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == lines


def test_a_resumed_run_keeps_its_model_selection(tmp_path):
    overrides = dict(training__val_freq=1, training__patience=3, optim__lr=0.3)
    train_losses(tiny_config("dkef_baseline", training__n_iters=10, **overrides), tmp_path / "full")
    train_losses(tiny_config("dkef_baseline", training__n_iters=4, **overrides), tmp_path / "split")
    train_losses(tiny_config("dkef_baseline", training__n_iters=10, **overrides), tmp_path / "split")
    assert _val_log(tmp_path / "split") == _val_log(tmp_path / "full")
    best = [load_checkpoint(path / "checkpoints" / "best.pth")["selection"] for path in
            (tmp_path / "full", tmp_path / "split")]
    assert best[0] == best[1]


def test_model_selection_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"training.patience=5 stops on the validation loss.*val_freq > 0"):
        validate_config(tiny_config("dkef_baseline", training__patience=5))
    with pytest.raises(ValueError, match=r"eval.checkpoint='last' must be 'latest', 'best' or a step number"):
        validate_config(tiny_config("dkef_baseline", eval__checkpoint="last"))
    with pytest.raises(ValueError, match=r"training.val_freq=1 selects models on a validation loss, which the 'nice' task"):
        train_losses(tiny_config("nice_baseline", training__val_freq=1), tmp_path)


def test_validation_of_a_deq_model_can_use_its_exact_derivatives(tmp_path):
    """With deq.val_exact_tol the logged validation loss is that of the exact fixed point's score."""
    from main import validation_context_for
    from patches import deq_layer_stats

    assert validation_context_for(tiny_config("dkef_deq")) is None
    config = tiny_config("dkef_deq", training__n_iters=2, training__val_freq=1, deq__val_exact_tol=1e-7)
    run.train(config, str(tmp_path), model_transform_for(config), deq_layer_stats, validation_context_for(config))
    best = min(value for _, value in _val_log(tmp_path))
    exact = tiny_config("dkef_deq", eval__checkpoint="best", deq__grad="unrolled", deq__tol=1e-7)
    task, _, _ = run.load_for_eval(exact, str(tmp_path), model_transform_for(exact))
    assert task.val_loss(task.model) == pytest.approx(best, rel=1e-6)
    assert config.deq.grad == "phantom"  # training itself kept the phantom gradient


@pytest.mark.parametrize("distribution", ["random", "standard"])
def test_dkef_gaussian_data_follows_config_data_gaussian(distribution):
    config = tiny_config("dkef_baseline", data__dataset="gaussian100", data__gaussian=distribution)
    torch.manual_seed(config.seed)
    task = build_task(config, torch.device("cpu"), model_transform_for(config))
    task.prepare_eval(task.model)
    metrics = task.evaluate(task.model)
    assert metrics["data_protocol"] == f"gaussian:{distribution}"
    if distribution == "standard":
        test = gaussian_dataset(100, eigenvalue_range=(1.0, 1.0), mean_std=0.0).test[: config.data.max_eval].double()
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(test).sum(1).mean().item()
        assert metrics["true_test_log_likelihood"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"data.gaussian='identity'.*'random', 'standard'"):
        validate_config(tiny_config("dkef_baseline", data__gaussian="identity"))
