"""The train / eval / sample loops (score_sde_pytorch style): generic over tasks, DEQ-agnostic.

WORKDIR holds `checkpoints/checkpoint_<step>.pth` (kept snapshots), `checkpoints/best.pth` (the
lowest validation loss so far, with training.val_freq > 0), `checkpoint-meta.pth` (the preemption
checkpoint a restarted run resumes from), `config.json` (the config the workdir was started with;
see `score_matching.workdir_config`), `metrics.jsonl`, `tensorboard/`, `samples/` and `eval.json`.
`model_transform` and `model_metrics` are the hooks through which `main.py` applies patches and
reads their diagnostics; this module never looks inside the model.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import math
import resource
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.distributed as dist
from ml_collections import ConfigDict
from torch import nn

from score_matching.batching import batch_indices
from score_matching.checkpoint import (
    UnreadableCheckpointError,
    load_checkpoint,
    load_state_strict,
    newest_readable_snapshot,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from score_matching.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from score_matching.ema import ExponentialMovingAverage
from score_matching.metrics_log import MetricsWriter, PhaseProgress, Progress, cut_metrics_back, training_summary
from score_matching.optim import get_optimize_fn, get_optimizer
from score_matching.sampling import save_image_grid, save_samples_npz
from score_matching.tasks import ModelTransform, Task, build_task
from score_matching.workdir_config import check_workdir_config, store_workdir_config

logger = logging.getLogger("score_matching")
ModelMetrics = Callable[[nn.Module], dict[str, float]]
ValidationContext = Callable[[nn.Module], ContextManager]
DEVICES = ("auto", "cpu", "cuda")
PREEMPTION_CHECKPOINT = "checkpoint-meta.pth"


def get_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {list(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config.device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seeds torch and numpy (Python's random is not used by the project)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated by tensors, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def average_gradients(model: nn.Module, info: DistInfo) -> None:
    """All-reduces parameter gradients to their mean over processes (data parallelism)."""
    if info.world_size == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(info.world_size)


def get_step_fn(
    config: ConfigDict, task: Task, optimizer: torch.optim.Optimizer, ema: ExponentialMovingAverage, info: DistInfo
) -> Callable[[int, object], tuple[torch.Tensor, float]]:
    """The training step (step, batch) -> (loss, grad norm): loss, backward, gradient averaging
    over processes, warm-up and clipping (`get_optimize_fn`), the update and the EMA."""
    optimize_fn = get_optimize_fn(config)
    model = task.model

    def step_fn(step: int, batch: object) -> tuple[torch.Tensor, float]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}")
        loss.backward()
        average_gradients(model, info)
        grad_norm = optimize_fn(optimizer, model.parameters(), step)
        ema.update(model)
        return loss.detach(), grad_norm

    return step_fn


def _setup(config: ConfigDict, model_transform: ModelTransform) -> tuple[Task, torch.device, DistInfo]:
    device = get_device(config.device)
    info = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    seed_everything(config.seed)
    task = build_task(config, device, model_transform)
    return task, device, info


@dataclass
class Selection:
    """Model selection on the validation loss: the best value so far, its step, and whether training
    stopped early (patience exhausted). Saved in every checkpoint, so a resumed run keeps it."""

    best_loss: float = math.inf
    best_step: int = 0
    stopped: bool = False


def _save(workdir: pathlib.Path, name: str, task: Task, ema, optimizer, step: int, selection: Selection) -> None:
    state = {
        "model": task.model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": rng_state(),
        "selection": asdict(selection),
    }
    save_checkpoint(workdir / name, state)


def _restore(path: pathlib.Path, task: Task, ema, optimizer, device: torch.device,
             state: dict | None = None) -> tuple[int, Selection]:
    """Restores the checkpoint at `path` (its already loaded `state`, when given)."""
    if state is None:
        state = load_checkpoint(path, map_location=device)
    load_state_strict(task.model, state["model"], f"model in {path}")
    ema.load_state_dict(state["ema"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    # Checkpoints written before model selection existed carry no "selection": nothing was selected.
    return state["step"], Selection(**state.get("selection", {}))


def _resume_point(workdir: pathlib.Path, device: torch.device, take_snapshot: bool,
                  info: DistInfo) -> tuple[pathlib.Path, dict] | None:
    """The checkpoint a restarted run resumes from and its state: the preemption checkpoint, or
    None on a first start. When it cannot be read, the newest readable kept snapshot, with
    `take_snapshot` (the unreadable file is then renamed '<name>.unreadable-<time>', never
    overwritten); without it an error naming both files."""
    path = workdir / PREEMPTION_CHECKPOINT
    if not path.is_file():
        return None
    try:
        return path, load_checkpoint(path, map_location=device)
    except UnreadableCheckpointError as error:
        found = newest_readable_snapshot(workdir / "checkpoints", map_location=device)
        if found is None:
            raise UnreadableCheckpointError(f"{error}; there is no readable snapshot in {workdir / 'checkpoints'} "
                                            "to resume from either") from error
        snapshot, state = found
        if not take_snapshot:
            raise UnreadableCheckpointError(
                f"{error}. The newest readable snapshot is {snapshot} (step {state['step']}): pass "
                "--config.training.resume_from_snapshot=true to resume from it (the unreadable file is kept, "
                "renamed), or move the unreadable file away to start over"
            ) from error
    barrier(info)  # every process has read the snapshot before the bad file is moved
    if info.is_main:
        kept = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        os.replace(path, kept)
        logger.warning("%s is unreadable; kept it as %s and resumed from %s (step %d)", path, kept, snapshot,
                       state["step"])
    return snapshot, state


def _with_ema(task: Task, ema: ExponentialMovingAverage, fn: Callable[[], object]) -> object:
    """Runs fn with the EMA weights swapped in and its own RNG stream, so training is unaffected."""
    ema.swap_in(task.model)
    try:
        with torch.random.fork_rng(devices=[]):
            return fn()
    finally:
        ema.swap_out(task.model)


def train(
    config: ConfigDict,
    workdir: str,
    model_transform: ModelTransform,
    model_metrics: ModelMetrics,
    validation_context: ValidationContext | None = None,
) -> None:
    """Trains `config.model`, resuming from WORKDIR's preemption checkpoint if one exists.

    Before any work a restart checks its config against WORKDIR/config.json. On resume, stale
    temporary files are removed and metrics.jsonl is cut back to the resumed step. An unreadable
    preemption checkpoint is an error naming it and the newest readable snapshot, which
    training.resume_from_snapshot resumes from.

    `validation_context(model)`, if given, is a context manager the validation loss is taken in
    (main.py's: DEQ layers with exact derivatives)."""
    workdir_path = pathlib.Path(workdir)
    check_workdir_writable(workdir_path, create=True)
    config_changes = check_workdir_config(config, workdir_path)
    task, device, info = _setup(config, model_transform)
    model = task.model
    optimizer = get_optimizer(config, model.parameters())
    ema = ExponentialMovingAverage(model, config.model.ema_rate)
    training = config.training
    if training.val_freq > 0 and task.val_loss is None:
        raise ValueError(
            f"training.val_freq={training.val_freq} selects models on a validation loss, which the "
            f"{config.model.name!r} task does not define; set training.val_freq=0"
        )
    if info.is_main:
        for folder in (workdir_path, workdir_path / "checkpoints"):
            remove_stale_temporaries(folder)
    start, selection = 0, Selection()
    resume = _resume_point(workdir_path, device, training.resume_from_snapshot, info)
    if resume is not None:
        start, selection = _restore(resume[0], task, ema, optimizer, device, state=resume[1])
        logger.info("resumed from %s at step %d", resume[0], start)
    if info.is_main:
        cut_metrics_back(workdir_path, start)
        store_workdir_config(config, workdir_path, config_changes)
    if selection.stopped:
        logger.info("training stopped early at step %d (best validation loss %.4g at step %d); nothing to do",
                    start, selection.best_loss, selection.best_step)
        return
    writer = MetricsWriter(workdir_path, enabled=info.is_main)
    if info.is_main:
        logger.info("training %s for steps %d-%d into %s", config.model.name, start + 1, training.n_iters,
                    workdir_path.resolve())
    progress = Progress(start, training.n_iters, training.batch_size)
    # Between log_freq lines, slow steps still give a progress line every REPORT_INTERVAL_S seconds.
    ticker = PhaseProgress("training", training.n_iters, emit=logger.info if info.is_main else lambda line: None)
    step_times: list[float] = []
    step_fn = get_step_fn(config, task, optimizer, ema, info)
    for step in range(start, training.n_iters):
        idx = batch_indices(task.n_train, training.batch_size, step, config.seed, info.rank, info.world_size)
        batch = task.get_batch(idx, step)
        tic = time.perf_counter()
        loss, grad_norm = step_fn(step, batch)
        step_times.append(time.perf_counter() - tic)
        done = step + 1
        if done % training.log_freq == 0 or done == training.n_iters:
            mean_loss = all_reduce_mean(loss, info).item()
            scalars = {
                "loss": mean_loss,
                "grad_norm": grad_norm,
                "time_per_step_ms": 1e3 * float(np.median(step_times)),
                "peak_memory_mib": peak_memory_mib(device),
                **model_metrics(model),
            }
            step_times.clear()
            writer.write(done, scalars)
            if info.is_main:
                logger.info(progress.line(done, mean_loss))
            ticker.reported()
        else:
            ticker.update(done)
        if training.eval_freq > 0 and done % training.eval_freq == 0:
            scalars = _with_ema(task, ema, lambda: task.quick_eval(model))
            writer.write(done, {f"eval/{k}": v for k, v in scalars.items()})
        if task.sample is not None and training.sample_freq > 0 and done % training.sample_freq == 0 and info.is_main:
            _with_ema(task, ema, lambda: _draw_and_save(config, task, workdir_path / "samples", f"step_{done}"))
        if training.val_freq > 0 and done % training.val_freq == 0:
            _select(task, ema, optimizer, workdir_path, writer, info, selection, done, training.patience,
                    validation_context)
        last = done == training.n_iters or selection.stopped
        if info.is_main and (done % training.snapshot_freq == 0 or last):
            _save(workdir_path / "checkpoints", f"checkpoint_{done}.pth", task, ema, optimizer, done, selection)
        if info.is_main and (done % training.preemption_freq == 0 or last):
            _save(workdir_path, PREEMPTION_CHECKPOINT, task, ema, optimizer, done, selection)
        if done % training.preemption_freq == 0:
            barrier(info)
        if selection.stopped:
            logger.info("no validation improvement for %d steps: stopped at step %d (best %.4g at step %d)",
                        training.patience, done, selection.best_loss, selection.best_step)
            break
    writer.close()


def _select(task: Task, ema, optimizer, workdir: pathlib.Path, writer: MetricsWriter, info: DistInfo,
            selection: Selection, done: int, patience: int, context: ValidationContext | None) -> None:
    """Takes the validation loss (EMA weights, inside `context(model)` if given); a new minimum is saved
    as checkpoints/best.pth, and with patience > 0 a best older than `patience` steps stops training."""

    def validation_loss() -> float:
        with context(task.model) if context is not None else nullcontext():
            return task.val_loss(task.model)

    value = float(_with_ema(task, ema, validation_loss))
    writer.write(done, {"val/loss": value})
    if value < selection.best_loss:
        selection.best_loss, selection.best_step = value, done
        if info.is_main:
            _save(workdir / "checkpoints", "best.pth", task, ema, optimizer, done, selection)
    elif patience > 0 and done - selection.best_step >= patience:
        selection.stopped = True


def _draw_and_save(config: ConfigDict, task: Task, folder: pathlib.Path, stem: str) -> pathlib.Path:
    """Draws config.sampling.n_samples images and saves them as a PNG grid and an .npz; returns the grid's path."""
    grid = folder / f"{stem}.png"
    logger.info("drawing %d samples into %s (and .npz)", config.sampling.n_samples, grid)
    generator = torch.Generator(device=next(task.model.parameters()).device).manual_seed(config.seed)
    samples = task.sample(task.model, config.sampling.n_samples, generator)
    folder.mkdir(parents=True, exist_ok=True)
    save_image_grid(samples, grid, nrow=int(len(samples) ** 0.5))
    save_samples_npz(samples, folder / f"{stem}.npz")
    logger.info("wrote %s", grid)
    return grid


class WorkdirNotWritableError(OSError):
    """The workdir cannot be written to, found before any work is done."""


def check_workdir_writable(workdir: str | pathlib.Path, create: bool) -> None:
    """Raises WorkdirNotWritableError unless a file can be created in `workdir` (made first if `create`)."""
    path = pathlib.Path(workdir)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise WorkdirNotWritableError(
            f"workdir {str(path)!r} is not writable ({type(error).__name__}: {error.strerror or error}); "
            "choose another --workdir"
        ) from error


def checkpoint_path(workdir: pathlib.Path, which: str) -> pathlib.Path:
    """The checkpoint file that eval.checkpoint (latest | best | a step number) names in `workdir`."""
    if which == "latest":
        return workdir / PREEMPTION_CHECKPOINT
    if which == "best":
        return workdir / "checkpoints" / "best.pth"
    if not which.isdigit():
        raise ValueError(f"eval.checkpoint must be 'latest', 'best' or a step number, got {which!r}")
    return workdir / "checkpoints" / f"checkpoint_{which}.pth"


def load_for_eval(config: ConfigDict, workdir: str, model_transform: ModelTransform) -> tuple[Task, ExponentialMovingAverage, int]:
    """The task with the checkpoint named by config.eval.checkpoint restored (EMA weights swapped in if
    config.eval.use_ema), its EMA and its step."""
    task, device, _ = _setup(config, model_transform)
    ema = ExponentialMovingAverage(task.model, config.model.ema_rate)
    path = checkpoint_path(pathlib.Path(workdir), str(config.eval.checkpoint))
    step, _ = _restore(path, task, ema, None, device)
    if config.eval.use_ema:
        ema.swap_in(task.model)
    task.model.eval()
    return task, ema, step


def evaluate(config: ConfigDict, workdir: str, model_transform: ModelTransform, model_metrics: ModelMetrics) -> dict:
    """Evaluates a checkpoint with autograd on (score-matching metrics need it); prints the metrics on
    stdout, then writes them to eval.json (the workdir is checked for writing before any work)."""
    check_workdir_writable(workdir, create=False)
    task, _, step = load_for_eval(config, workdir, model_transform)
    logger.info("evaluating %s at step %d (eval.json goes to %s)", config.model.name, step, pathlib.Path(workdir).resolve())
    if task.prepare_eval is not None:
        task.prepare_eval(task.model)
    metrics = {
        "step": step,
        "ema": bool(config.eval.use_ema),
        **task.evaluate(task.model),
        **model_metrics(task.model),
        **training_summary(workdir, up_to_step=step),
    }
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    print(text, end="", flush=True)  # before the write, so a failing write loses nothing
    path = pathlib.Path(workdir) / "eval.json"
    path.write_text(text)
    logger.info("wrote %s", path)
    return metrics


def sample(config: ConfigDict, workdir: str, model_transform: ModelTransform) -> pathlib.Path:
    """Draws config.sampling.n_samples images from a checkpoint into WORKDIR/samples (the workdir is
    checked for writing before any work); prints the grid's path on stdout."""
    check_workdir_writable(workdir, create=False)
    task, _, step = load_for_eval(config, workdir, model_transform)
    if task.sample is None:
        raise ValueError(f"model {config.model.name!r} does not generate images; --mode=sample is for image models")
    folder = pathlib.Path(workdir) / "samples"
    grid = _draw_and_save(config, task, folder, f"sample_step_{step}")
    print(f"samples: {grid} ({config.sampling.n_samples} images, step {step}; arrays in {grid.with_suffix('.npz')})", flush=True)
    return folder
