"""Sample-quality evaluation: Fréchet distance against closed forms, the statistics cache, the
TF-Inception extractor on random weights of the right shapes, the MNIST feature classifier, and
the wiring into the NCSN task's evaluation."""
from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from ml_collections import ConfigDict

from available_data import require_dataset
from score_matching.datasets.mnist import read_mnist_split
from score_matching.evaluation.frechet import frechet_distance, gaussian_statistics
from score_matching.evaluation.image_metrics import image_sample_metrics
from score_matching.evaluation.inception import (
    EXTRACTOR_NAME,
    INCEPTION_WEIGHT_FILES,
    POOL3_FEATURES,
    inception_features,
    load_inception,
    to_uint8_rgb,
)
from score_matching.evaluation.mnist_classifier import (
    FEATURE_DIM,
    TrainingSettings,
    classifier_accuracy,
    classifier_features,
    load_classifier,
    save_classifier,
    train_classifier,
)
from score_matching.evaluation.sample_quality import classifier_label_statistics, to_classifier_size
from score_matching.evaluation.statistics_cache import cached_statistics, statistics_path

# --- Fréchet distance -----------------------------------------------------------------------


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("rotate", [False, True], ids=["diagonal", "commuting"])
def test_frechet_distance_matches_the_closed_form_for_commuting_covariances(rotate):
    # Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute: tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ_i (√a_i − √b_i)².
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    q = _random_orthogonal(d, rng) if rotate else np.eye(d)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_in_one_dimension_and_of_a_gaussian_to_itself():
    # 1-D: (m1 − m2)² + (s1 − s2)² with standard deviations s.
    one_d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert one_d == pytest.approx(9 + 1)
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 5))
    sigma = m @ m.T + np.eye(5)
    assert frechet_distance(np.ones(5), sigma, np.ones(5), sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_non_commuting_covariances_matches_the_symmetric_form():
    # tr (Σ1Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½, computed here by eigendecompositions of symmetric matrices.
    rng = np.random.default_rng(2)
    d = 7
    m1, m2 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    sigma1, sigma2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)

    def sym_sqrt(s):
        w, v = np.linalg.eigh(s)
        return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T

    root = sym_sqrt(sigma1)
    expected = np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(sym_sqrt(root @ sigma2 @ root))
    assert frechet_distance(np.zeros(d), sigma1, np.zeros(d), sigma2) == pytest.approx(expected, rel=1e-8)


def test_gaussian_statistics_are_the_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    centred = x - [2.0, 2.0]
    np.testing.assert_allclose(sigma, centred.T @ centred / 2)


def test_bad_statistics_are_clear_errors():
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_statistics(np.array([[0.0, np.nan], [1.0, 1.0]]))


# --- statistics cache -----------------------------------------------------------------------


def test_reference_statistics_are_cached_by_dataset_extractor_and_count(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((10, 3))
    calls = []

    def compute():
        calls.append(1)
        return features

    mu, sigma = cached_statistics(tmp_path, "mnist28-test", "cnn-abc", 10, compute)
    again = cached_statistics(tmp_path, "mnist28-test", "cnn-abc", 10, compute)
    assert len(calls) == 1
    np.testing.assert_allclose(again[0], features.mean(0))
    np.testing.assert_allclose(again[1], np.cov(features, rowvar=False))
    np.testing.assert_array_equal(mu, again[0])
    assert statistics_path(tmp_path, "mnist28-test", "cnn-abc", 10).is_file()
    cached_statistics(tmp_path, "mnist28-test", "cnn-other", 10, compute)  # another extractor: recomputed
    assert len(calls) == 2
    with pytest.raises(ValueError, match="4 rows for a cache entry of count 5"):
        cached_statistics(tmp_path, "x", "y", 5, lambda: np.zeros((4, 2)))
    with pytest.raises(ValueError, match="may only contain"):
        statistics_path(tmp_path, "a/b", "y", 5)


# --- TF-Inception on random weights ---------------------------------------------------------


def _randomly_initialised_inception() -> torch.nn.Module:
    """torch-fidelity's Inception with its layers' default initialisation: the weight download and
    the load are stubbed out (no internet here; the real weights are tested by shape only)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    torch.manual_seed(0)
    with mock.patch.object(tfi, "load_state_dict_from_url", return_value={}), mock.patch.object(
        tfi.FeatureExtractorInceptionV3, "load_state_dict"
    ):
        return tfi.FeatureExtractorInceptionV3(EXTRACTOR_NAME, [POOL3_FEATURES])


def test_inception_gives_2048_pool_features_and_loads_weights_from_a_local_file(tmp_path):
    random_net = _randomly_initialised_inception()
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    features = inception_features(random_net, images, batch_size=2)
    assert features.shape == (2, 2048) and np.isfinite(features).all()

    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(random_net.state_dict(), path)
    loaded = load_inception(str(path))
    for name, value in random_net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    np.testing.assert_array_equal(inception_features(loaded, images, batch_size=1), features)


@pytest.mark.parametrize("path", ["", "/nonexistent/pt_inception.pth"])
def test_missing_inception_weights_say_which_file_to_get_and_where_to_put_it(path):
    with pytest.raises(FileNotFoundError) as error:
        load_inception(path)
    message = str(error.value)
    assert "eval.inception_weights" in message
    for name, url in INCEPTION_WEIGHT_FILES.items():
        assert name in message and url in message


def test_images_become_uint8_rgb_rounded_like_save_image():
    grey = torch.tensor([0.0, 1.0, 0.5, 0.2, 1.3]).view(1, 1, 1, 5)
    out = to_uint8_rgb(grey)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 5)
    expected = torch.tensor([0, 255, 128, 51, 255], dtype=torch.uint8)  # floor(255 x + 0.5), clamped
    for channel in range(3):
        assert torch.equal(out[0, channel, 0], expected)


# --- MNIST feature classifier ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test_split():
    return read_mnist_split(require_dataset("mnist"), train=False)


@pytest.fixture(scope="module")
def small_classifier(mnist_test_split):
    """A classifier trained for one epoch on 5000 training images (a few seconds; ~92 % accurate)."""
    images, labels = read_mnist_split(None, train=True)
    return train_classifier(images[:5000], labels[:5000], TrainingSettings(epochs=1, batch_size=32, seed=0))


def test_a_small_training_budget_gives_a_sensible_classifier(small_classifier, mnist_test_split):
    images, labels = mnist_test_split
    assert classifier_accuracy(small_classifier, images[:2000], labels[:2000]) > 0.85
    assert classifier_features(small_classifier, images[:3]).shape == (3, FEATURE_DIM)


@pytest.mark.slow
def test_one_epoch_on_all_training_images_exceeds_95_percent(mnist_test_split):
    images, labels = read_mnist_split(None, train=True)
    model = train_classifier(images, labels, TrainingSettings(epochs=1))
    assert classifier_accuracy(model, *mnist_test_split) > 0.95


def test_classifier_fd_of_test_halves_is_far_below_that_of_noise(small_classifier, mnist_test_split):
    # Two random halves: MNIST's test set is ordered (its first 5000 digits come from other writers
    # than its last 5000), so the first and second half differ measurably.
    order = torch.randperm(10000, generator=torch.Generator().manual_seed(0))
    features = classifier_features(small_classifier, mnist_test_split[0][order]).numpy()
    noise = torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    first_half = gaussian_statistics(features[:5000])
    halves = frechet_distance(*first_half, *gaussian_statistics(features[5000:]))
    to_noise = frechet_distance(*first_half, *gaussian_statistics(classifier_features(small_classifier, noise).numpy()))
    assert 0 < halves < 0.02 * to_noise


def test_a_saved_classifier_loads_with_the_same_weights(small_classifier, tmp_path):
    save_classifier(small_classifier, tmp_path / "c.pt", 0.9, TrainingSettings())
    loaded = load_classifier(tmp_path / "c.pt")
    for name, value in small_classifier.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    with pytest.raises(FileNotFoundError, match="python -m score_matching.evaluation.mnist_classifier"):
        load_classifier(tmp_path / "missing.pt")


def test_classifier_input_is_brought_to_28_pixels():
    assert to_classifier_size(torch.rand(2, 1, 32, 32)).shape == (2, 1, 28, 28)
    same = torch.rand(2, 1, 28, 28)
    assert to_classifier_size(same) is same


class _TableClassifier(torch.nn.Module):
    """Returns the logits log(p) of the probability row whose index is an image's first pixel."""

    def __init__(self, probabilities: torch.Tensor) -> None:
        super().__init__()
        self.log_p = torch.nn.Parameter(probabilities.log(), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.log_p[images[:, 0, 0, 0].long()]


def test_label_statistics_of_hand_made_class_probabilities():
    confident = lambda label: [0.95 if k == label else 0.05 / 9 for k in range(10)]
    unsure = [0.5] + [0.5 / 9] * 9
    rows = torch.tensor([confident(2), confident(5), unsure], dtype=torch.float64)
    which = torch.tensor([0, 0, 0, 1, 2, 2])  # three confident 2s, one confident 5, two unsure
    images = which.double().view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    stats = classifier_label_statistics(_TableClassifier(rows), images, threshold=0.9, batch_size=4)
    assert stats["confident_share"] == pytest.approx(4 / 6)
    assert stats["confident_classes"] == 2
    assert stats["class_entropy"] == pytest.approx((-0.75 * np.log(0.75) - 0.25 * np.log(0.25)) / np.log(10))
    none = classifier_label_statistics(_TableClassifier(rows), images[4:], threshold=0.9)
    assert none == {"confident_share": 0.0, "confident_classes": 0, "class_entropy": 0.0}
    with pytest.raises(ValueError, match="threshold must lie in"):
        classifier_label_statistics(_TableClassifier(rows), images, threshold=1.0)


def test_label_statistics_tell_digits_from_noise(small_classifier, mnist_test_split):
    digits = classifier_label_statistics(small_classifier, mnist_test_split[0][:2000], threshold=0.9)
    assert digits["confident_share"] > 0.6 and digits["confident_classes"] == 10 and digits["class_entropy"] > 0.95
    noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    to_noise = classifier_label_statistics(small_classifier, noise, threshold=0.9)
    assert to_noise["confident_share"] < 0.05 and to_noise["class_entropy"] < 0.5


# --- wiring into the evaluation -------------------------------------------------------------


def _eval_config(tmp_path, classifier_path, **eval_overrides) -> ConfigDict:
    from configs.defaults.ncsn import get_config

    config = get_config()
    config.data.dataset = "mnist"
    config.eval.cache_dir = str(tmp_path / "cache")
    config.eval.classifier_path = str(classifier_path)
    for key, value in eval_overrides.items():
        config.eval[key] = value
    return config


def test_image_metrics_report_the_classifier_fd_with_its_counts(small_classifier, mnist_test_split, tmp_path):
    path = tmp_path / "classifier.pt"
    save_classifier(small_classifier, path, 0.9, TrainingSettings())
    config = _eval_config(tmp_path, path, classifier_fd_samples=300)
    images = mnist_test_split[0][:2000].float() / 255
    test = [(image, 0) for image in images]
    real = image_sample_metrics(config, [], test, lambda n: images[-n:], torch.device("cpu"))
    noise = image_sample_metrics(config, [], test, lambda n: torch.rand(n, 1, 28, 28), torch.device("cpu"))
    assert real["mnist_classifier_fd_samples"] == 300 and real["mnist_classifier_fd_reference_images"] == 2000
    assert "fid" not in real
    assert 0 < real["mnist_classifier_fd"] < 0.1 * noise["mnist_classifier_fd"]
    ceiling = classifier_label_statistics(small_classifier, images, threshold=0.9)
    for key, value in ceiling.items():
        assert real[f"test_images_classifier_{key}"] == noise[f"test_images_classifier_{key}"] == value
    assert real["classifier_confident_share"] > 0.6 and real["classifier_confident_classes"] == 10
    assert noise["classifier_confident_share"] < 0.05 and noise["classifier_class_entropy"] < 0.5
    assert len(list((tmp_path / "cache").glob("mnist28-test--mnist-cnn-*--n2000.npz"))) == 1


def test_image_metrics_check_counts_and_inception_weights_before_sampling(tmp_path):
    def never(n):
        raise AssertionError("no samples should be drawn")

    config = _eval_config(tmp_path, tmp_path / "c.pt", classifier_fd_samples=100)
    with pytest.raises(ValueError, match="classifier_fd_samples=100 is too few"):
        image_sample_metrics(config, [], [], never, torch.device("cpu"))
    missing = str(tmp_path / "no.pth")
    config = _eval_config(tmp_path, tmp_path / "c.pt", classifier_fd_samples=0, inception_weights=missing)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        image_sample_metrics(config, [], [], never, torch.device("cpu"))
    config = _eval_config(tmp_path, tmp_path / "c.pt", classifier_fd_samples=0)
    assert image_sample_metrics(config, [], [], never, torch.device("cpu")) == {}


def test_ncsn_evaluation_writes_the_classifier_fd_next_to_its_sample_count(small_classifier, tmp_path, mnist_root):
    from main import model_transform_for
    from patches import deq_layer_stats
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    path = tmp_path / "classifier.pt"
    save_classifier(small_classifier, path, 0.9, TrainingSettings())
    config = tiny_config(
        "ncsn_deq", eval__classifier_fd_samples=130, eval__n_steps_each=1, eval__batch_size=65,
        eval__classifier_path=str(path), eval__cache_dir=str(tmp_path / "cache"),
    )
    train_losses(config, tmp_path / "run")
    run.evaluate(config, str(tmp_path / "run"), model_transform_for(config), deq_layer_stats)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["mnist_classifier_fd_samples"] == 130 and saved["mnist_classifier_fd_reference_images"] == 10000
    assert np.isfinite(saved["mnist_classifier_fd"]) and saved["mnist_classifier_fd"] > 0
    assert "test_anneal_dsm_loss" in saved and "fid" not in saved
    assert 0 <= saved["classifier_confident_share"] <= 1 and saved["test_images_classifier_confident_classes"] == 10


def test_vae_evaluation_writes_the_classifier_fd_of_decoder_samples(small_classifier, tmp_path, mnist_root):
    from main import model_transform_for
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    path = tmp_path / "classifier.pt"
    save_classifier(small_classifier, path, 0.9, TrainingSettings())
    config = tiny_config(
        "vae_deq", eval__classifier_fd_samples=130, eval__classifier_path=str(path), eval__cache_dir=str(tmp_path / "cache"),
    )
    train_losses(config, tmp_path / "run")
    run.evaluate(config, str(tmp_path / "run"), model_transform_for(config), lambda m: {})
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["mnist_classifier_fd_samples"] == 130 and saved["mnist_classifier_fd_reference_images"] == 10000
    assert np.isfinite(saved["mnist_classifier_fd"]) and saved["mnist_classifier_fd"] > 0
    assert "test_elbo" in saved and "fid" not in saved
