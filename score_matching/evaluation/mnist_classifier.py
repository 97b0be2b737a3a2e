"""A small MNIST CNN classifier whose penultimate layer is the feature space of `mnist_classifier_fd`.

NOT the Inception network of FID: distances in this feature space are only comparable with each
other (same classifier file, same sample count), never with published FIDs.

Train it and cache it to a file (the NCSN evaluation also does this by itself on first use):

    python -m score_matching.evaluation.mnist_classifier [--out=PATH] [--epochs=1] [--data-root=DIR]

PATH defaults to `default_classifier_path()` (<cache dir>/mnist_classifier.pt, see
`resolve_cache_dir`); the command prints the test accuracy, also stored in the file.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from score_matching.datasets.mnist import MNIST_CLASSES, MNIST_IMAGE_SIDE, read_mnist_split
from score_matching.evaluation.statistics_cache import resolve_cache_dir
from score_matching.metrics_log import PhaseProgress

logger = logging.getLogger(__name__)
CLASSIFIER_FILE = "mnist_classifier.pt"
FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """conv 3×3 (32), ReLU, max-pool, conv 3×3 (64), ReLU, max-pool, dense 128, ReLU, dense 10.

    Takes images (B, 1, 28, 28) in [0, 1]; `features` is the penultimate dense layer's 128-d output
    before its ReLU (after it, units that never fire would make the feature covariance singular).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.hidden = nn.Linear(64 * 5 * 5, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, MNIST_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (B, 128), pre-activation."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE):
            raise ValueError(f"expected images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.hidden(h.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, 10)."""
        return self.head(F.relu(self.features(x)))


@dataclass(frozen=True)
class TrainingSettings:
    """How the classifier is trained: Adam at `lr` for `epochs` passes in shuffled batches."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def default_classifier_path() -> pathlib.Path:
    """<cache dir>/mnist_classifier.pt, the cache dir as `resolve_cache_dir('')`."""
    return resolve_cache_dir("") / CLASSIFIER_FILE


def as_float_images(images: Tensor) -> Tensor:
    """uint8 images as float32 in [0, 1]; float images unchanged."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def train_classifier(
    images: Tensor, labels: Tensor, settings: TrainingSettings = TrainingSettings()
) -> MNISTClassifier:
    """A classifier trained on images (N, 1, 28, 28) (uint8, or float in [0, 1]) and labels (N,)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    model.train()
    batches_per_epoch = -(-images.shape[0] // settings.batch_size)
    progress = PhaseProgress("training the MNIST feature classifier", settings.epochs * batches_per_epoch, "batches")
    for epoch in range(settings.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for index, start in enumerate(range(0, len(order), settings.batch_size)):
            idx = order[start:start + settings.batch_size]
            loss = F.cross_entropy(model(as_float_images(images[idx])), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.update(epoch * batches_per_epoch + index + 1, f"epoch {epoch + 1}/{settings.epochs}")
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: MNISTClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of images (uint8, or float in [0, 1]) whose predicted class is their label."""
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(as_float_images(images[start:start + batch_size]))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / images.shape[0]


@torch.no_grad()
def classifier_features(model: MNISTClassifier, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Penultimate features (N, 128), in float64 on the CPU, of images (uint8, or float in [0, 1])."""
    device = next(model.parameters()).device
    starts = range(0, images.shape[0], batch_size)
    progress = PhaseProgress(f"MNIST classifier features of {images.shape[0]} images", len(starts), "batches")
    chunks = []
    for index, start in enumerate(starts):
        chunks.append(model.features(as_float_images(images[start:start + batch_size]).to(device)).cpu().double())
        progress.update(index + 1)
    return torch.cat(chunks)


def save_classifier(
    model: MNISTClassifier, path: str | os.PathLike, test_accuracy: float, settings: TrainingSettings
) -> None:
    """Writes the weights with the test accuracy and training settings (a temporary file, renamed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "test_accuracy": test_accuracy, "settings": asdict(settings)}, tmp)
    os.replace(tmp, path)


def load_classifier(path: str | os.PathLike) -> MNISTClassifier:
    """The classifier saved at `path`, in eval mode on the CPU."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no MNIST classifier at {path}; train one with "
            f"`python -m score_matching.evaluation.mnist_classifier --out={path}`"
        )
    model = MNISTClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def train_and_save(
    path: str | os.PathLike, data_root: str | os.PathLike | None = None, settings: TrainingSettings = TrainingSettings()
) -> float:
    """Trains on MNIST's 60000 training images, saves to `path`; returns the test accuracy."""
    train_images, train_labels = read_mnist_split(data_root, train=True)
    test_images, test_labels = read_mnist_split(data_root, train=False)
    model = train_classifier(train_images, train_labels, settings)
    accuracy = classifier_accuracy(model, test_images, test_labels)
    save_classifier(model, path, accuracy, settings)
    return accuracy


def load_or_train(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> MNISTClassifier:
    """The classifier at `path`, trained there first (default settings, under a minute on one core) if absent."""
    path = pathlib.Path(path)
    if not path.is_file():
        logger.info("training the MNIST feature classifier into %s (first use only)", path)
        accuracy = train_and_save(path, data_root)
        logger.info("MNIST feature classifier: test accuracy %.4f", accuracy)
    return load_classifier(path)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: train, save, print the test accuracy."""
    parser = argparse.ArgumentParser(description="Train the MNIST classifier behind mnist_classifier_fd.")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="where to save it (default: the cache dir)")
    parser.add_argument("--epochs", type=int, default=TrainingSettings.epochs)
    parser.add_argument("--seed", type=int, default=TrainingSettings.seed)
    parser.add_argument(
        "--data-root", default=None, help="MNIST data root (default: $SCORE_MATCHING_DATA, else ./data)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or default_classifier_path()
    accuracy = train_and_save(out, args.data_root, TrainingSettings(epochs=args.epochs, seed=args.seed))
    print(f"wrote {out}: test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
