"""Tabular data: data-root resolution, the UCI protocol on the real files, the Gaussian closed forms,
and the dataset registry. References are numpy re-derivations of the protocol note and torch.distributions."""
import math
import pathlib

import numpy as np
import pytest
import torch

from score_matching.datasets import (
    DATA_ROOT_ENV,
    DATASETS,
    find_file,
    gaussian_dataset,
    get_dataset,
    load_uci,
    read_numeric_table,
    resolve_data_root,
)

PARKINSONS_DROPPED_BY_CORRELATION = {"Jitter(%)", "Jitter:RAP", "Shimmer", "Shimmer:APQ3"}
WINE_HEADER = (
    '"fixed acidity";"volatile acidity";"citric acid";"residual sugar";"chlorides";"free sulfur dioxide";'
    '"total sulfur dioxide";"density";"pH";"sulphates";"alcohol";"quality"'
)


def _unwhiten(data, split: torch.Tensor) -> np.ndarray:
    matrix, mean = data.whiten_matrix.numpy(), data.whiten_mean.numpy()
    return split.double().numpy() @ np.linalg.inv(matrix) + mean


def _reference_shuffle(rows: np.ndarray) -> np.ndarray:
    """The reference code's shuffle: the global numpy RNG seeded with 2019 (state restored afterwards)."""
    state = np.random.get_state()
    np.random.seed(2019)
    shuffled = rows.copy()
    np.random.shuffle(shuffled)
    np.random.set_state(state)
    return shuffled


# --- data root -----------------------------------------------------------------------------------

def test_resolve_data_root_prefers_argument_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv(DATA_ROOT_ENV)
    assert resolve_data_root(None) == pathlib.Path("data")
    assert resolve_data_root("") == pathlib.Path("data")


def test_find_file_lists_every_path_and_the_hint(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.csv").write_text("1\n")
    assert find_file(tmp_path, ["a/x.csv", "b/x.csv"], what="x") == tmp_path / "b" / "x.csv"
    with pytest.raises(FileNotFoundError) as error:
        find_file(tmp_path, ["a/y.csv", "y.csv"], what="table y", hint="Put y.csv there.")
    message = str(error.value)
    assert "table y" in message and "Put y.csv there." in message and DATA_ROOT_ENV in message
    assert str((tmp_path / "a" / "y.csv").resolve()) in message and str((tmp_path / "y.csv").resolve()) in message


# --- UCI on the real files -----------------------------------------------------------------------

def test_parkinsons_paper_protocol_matches_the_note(uci_root):
    data = load_uci("parkinsons", uci_root)
    assert data.protocol == "paper" and data.dim == 15
    assert set(data.correlated_columns) == PARKINSONS_DROPPED_BY_CORRELATION
    assert data.dropped_columns == ("subject#", "age", "sex")
    assert (len(data.train), len(data.val), len(data.test)) == (4760, 528, 587)
    assert all(split.dtype == torch.float32 and split.shape[1] == 15 for split in (data.train, data.val, data.test))
    rows = torch.cat([data.train, data.val, data.test]).double()
    # whitened to I, then N(0, 0.05^2) noise: covariance (1 + 0.0025) I up to sampling error
    covariance = torch.cov(rows.T, correction=0)
    assert torch.allclose(covariance, 1.0025 * torch.eye(15, dtype=torch.float64), atol=0.02)


def test_parkinsons_rows_are_the_reference_shuffle_and_split(uci_root):
    data = load_uci("parkinsons", uci_root, noise_std=0.0)
    path = uci_root / "uci" / "parkinsons_updrs.data"
    header = path.read_text().splitlines()[0].split(",")
    raw = np.loadtxt(path, delimiter=",", skiprows=1)
    dropped = {"subject#", "age", "sex"} | PARKINSONS_DROPPED_BY_CORRELATION
    keep = [i for i, name in enumerate(header) if name not in dropped]
    reference = _reference_shuffle(raw[:, keep])
    assert data.columns == tuple(header[i] for i in keep)
    np.testing.assert_allclose(_unwhiten(data, data.test), reference[-587:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_unwhiten(data, data.val), reference[-587 - 528:-587], rtol=1e-4, atol=1e-4)
    whitened = torch.cat([data.train, data.val, data.test]).double()
    np.testing.assert_allclose(torch.cov(whitened.T, correction=0).numpy(), np.eye(15), atol=1e-4)


def test_clean_protocol_whitens_on_the_training_split_only(uci_root):
    paper = load_uci("parkinsons", uci_root, noise_std=0.0)
    clean = load_uci("parkinsons", uci_root, protocol="clean", noise_std=0.0)
    assert clean.protocol == "clean"
    np.testing.assert_allclose(_unwhiten(clean, clean.test), _unwhiten(paper, paper.test), rtol=1e-4, atol=1e-4)
    train_rows = _unwhiten(clean, clean.train)
    np.testing.assert_allclose(clean.whiten_mean.numpy(), train_rows.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.cov(clean.train.double().numpy().T, ddof=0), np.eye(15), atol=1e-4)
    assert not torch.allclose(clean.whiten_mean, paper.whiten_mean)


@pytest.mark.parametrize("name, sizes", [("redwine", (1296, 144, 159)), ("whitewine", (3969, 440, 489))])
def test_wine_sizes_dimension_and_whitening(uci_root, name, sizes):
    data = load_uci(name, uci_root)
    assert data.dim == 11 and data.dropped_columns == ("quality",) and data.correlated_columns == ()
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    rows = torch.cat([data.train, data.val, data.test]).double()
    assert torch.allclose(torch.cov(rows.T, correction=0), 1.0025 * torch.eye(11, dtype=torch.float64), atol=0.02)


def test_wine_dequantisation_stays_within_the_median_gap(uci_root):
    data = load_uci("redwine", uci_root, noise_std=0.0)
    raw = np.loadtxt(uci_root / "uci" / "winequality-red.csv", delimiter=",")[:, :-1]
    gaps = np.array([np.median(np.diff(np.unique(column))) for column in raw.T])
    reference = _reference_shuffle(raw)
    rows = np.concatenate([_unwhiten(data, split) for split in (data.train, data.val, data.test)])
    noise = (rows - reference) / gaps
    assert np.all(np.abs(noise) <= 1 + 1e-3)
    # U(-gap, gap): variance 1/3 in gap units
    np.testing.assert_allclose(noise.var(axis=0), 1 / 3, atol=0.05)


def test_seed_controls_the_noise(uci_root):
    first, again = load_uci("redwine", uci_root, seed=3), load_uci("redwine", uci_root, seed=3)
    other = load_uci("redwine", uci_root, seed=4)
    assert torch.equal(first.train, again.train)
    assert not torch.allclose(first.train, other.train)


# --- UCI file formats and errors -----------------------------------------------------------------

def _wine_rows(n_rows: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.round(rng.uniform(0.5, 9.5, size=(n_rows, 12)), 2)


def test_semicolon_header_and_comma_headerless_files_parse_identically(tmp_path):
    semicolon = tmp_path / "semicolon.csv"
    semicolon.write_text(WINE_HEADER + "\n7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n"
                         "7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;9.8;5\n")
    comma = tmp_path / "comma.csv"
    comma.write_text("7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4,5\n"
                     "7.8,0.88,0,2.6,0.098,25,67,0.9968,3.2,0.68,9.8,5\n")
    header, semicolon_values = read_numeric_table(semicolon)
    no_header, comma_values = read_numeric_table(comma)
    assert header[0] == "fixed acidity" and header[-1] == "quality" and no_header is None
    expected = np.array([[7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4, 5],
                         [7.8, 0.88, 0, 2.6, 0.098, 25, 67, 0.9968, 3.2, 0.68, 9.8, 5]])
    np.testing.assert_array_equal(semicolon_values, expected)
    np.testing.assert_array_equal(comma_values, expected)


def test_both_file_formats_give_the_same_dataset(tmp_path):
    rows = _wine_rows(40)
    (tmp_path / "uci").mkdir()
    (tmp_path / "uci" / "winequality-red.csv").write_text(
        WINE_HEADER + "\n" + "\n".join(";".join(f"{v:g}" for v in row) for row in rows) + "\n")
    (tmp_path / "winequality-red.csv").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in rows) + "\n")
    from_semicolon = load_uci("redwine", tmp_path)  # finds <root>/uci/ first
    (tmp_path / "uci" / "winequality-red.csv").unlink()
    from_comma = load_uci("redwine", tmp_path)  # then <root>/
    assert (len(from_comma.train), len(from_comma.val), len(from_comma.test)) == (33, 3, 4)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(from_semicolon, split), getattr(from_comma, split))


def test_uci_errors_name_the_bad_value(tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        load_uci("whitewine", tmp_path)
    assert str((tmp_path / "uci" / "winequality-white.csv").resolve()) in str(missing.value)
    assert str((tmp_path / "winequality-white.csv").resolve()) in str(missing.value)
    with pytest.raises(ValueError, match="'rosewine'.*parkinsons"):
        load_uci("rosewine", tmp_path)
    (tmp_path / "winequality-red.csv").write_text("\n".join(",".join(map(str, row[:5])) for row in _wine_rows(20)))
    with pytest.raises(ValueError, match="5 columns, expected 12"):
        load_uci("redwine", tmp_path)
    (tmp_path / "winequality-red.csv").write_text("\n".join(",".join(map(str, row)) for row in _wine_rows(20)))
    with pytest.raises(ValueError, match="'dirty'.*paper.*clean"):
        load_uci("redwine", tmp_path, protocol="dirty")


# --- Gaussians -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, dim", [("gaussian100", 100), ("gaussian200", 200)])
def test_gaussian_sizes_and_well_conditioned_covariance(name, dim):
    data = get_dataset(name)
    assert data.dim == dim and data.train.shape == (4860, dim)
    assert data.val.shape == (540, dim) and data.test.shape == (600, dim)
    eigenvalues = torch.linalg.eigvalsh(data.covariance)
    assert torch.allclose(data.covariance, data.covariance.T)
    assert eigenvalues.min() >= 0.5 - 1e-9 and eigenvalues.max() <= 2.0 + 1e-9


def test_gaussian_closed_forms_match_torch_distributions():
    data = gaussian_dataset(30, seed=5)
    reference = torch.distributions.MultivariateNormal(data.mean, covariance_matrix=data.covariance)
    x = data.test.double().requires_grad_(True)
    expected_log_density = reference.log_prob(x)
    (expected_score,) = torch.autograd.grad(expected_log_density.sum(), x)
    torch.testing.assert_close(data.true_log_density(x.detach()), expected_log_density.detach())
    torch.testing.assert_close(data.true_score(x.detach()), expected_score)
    assert data.true_score(data.test).dtype == torch.float32


def test_gaussian_samples_follow_the_stated_distribution():
    data = gaussian_dataset(100, seed=1)
    samples = torch.cat([data.train, data.val, data.test])
    expected = -0.5 * (100 * (math.log(2 * math.pi) + 1) + data.log_det_covariance)
    # per-sample log-density has std sqrt(dim / 2) ~ 7; over 6000 samples the mean's std is ~ 0.09
    assert abs(data.true_log_density(samples.double()).mean().item() - expected) < 0.5


def test_gaussian_seed_and_identity_configuration():
    assert torch.equal(gaussian_dataset(10, seed=2).train, gaussian_dataset(10, seed=2).train)
    assert not torch.equal(gaussian_dataset(10, seed=2).covariance, gaussian_dataset(10, seed=3).covariance)
    standard = gaussian_dataset(200, eigenvalue_range=(1.0, 1.0), mean_std=0.0)
    torch.testing.assert_close(standard.covariance, torch.eye(200, dtype=torch.float64))
    with pytest.raises(ValueError, match="eigenvalue_range"):
        gaussian_dataset(5, eigenvalue_range=(2.0, 1.0))


def test_named_gaussians_are_the_registry_entries_by_distribution():
    standard = get_dataset("gaussian100", distribution="standard")
    torch.testing.assert_close(standard.covariance, torch.eye(100, dtype=torch.float64))
    assert torch.count_nonzero(standard.mean) == 0
    assert torch.equal(get_dataset("gaussian100").train, get_dataset("gaussian100", distribution="random").train)
    with pytest.raises(ValueError, match=r"unknown Gaussian distribution 'identity'; valid: \['random', 'standard'\]"):
        get_dataset("gaussian200", distribution="identity")


# --- registry ------------------------------------------------------------------------------------

def test_registry_names_and_entry_point(uci_root):
    assert {"parkinsons", "redwine", "whitewine", "gaussian", "gaussian100", "gaussian200",
            "mnist", "cifar10", "celeba"} <= set(DATASETS.names())
    via_registry = get_dataset("parkinsons", uci_root, protocol="clean", seed=2)
    direct = load_uci("parkinsons", uci_root, protocol="clean", seed=2)
    assert torch.equal(via_registry.test, direct.test) and via_registry.protocol == "clean"
    assert get_dataset("gaussian", dim=7, sizes=(5, 2, 3)).train.shape == (5, 7)
    with pytest.raises(ValueError, match="'imagenet'.*valid.*parkinsons"):
        get_dataset("imagenet")


@pytest.mark.parametrize("bad_value", ["nan", "inf", "-Infinity"])
def test_a_non_finite_value_in_a_uci_file_is_named_by_file_line_and_column(tmp_path, bad_value):
    rows = [[f"{v:g}" for v in row] for row in _wine_rows(40)]
    rows[16][4] = bad_value  # data row 17, column 5 ("chlorides")
    lines = [WINE_HEADER] + [";".join(row) for row in rows]
    lines.insert(5, "")  # a blank line before data row 5: file lines and data rows differ by two from there on
    (tmp_path / "uci").mkdir()
    path = tmp_path / "uci" / "winequality-red.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        load_uci("redwine", tmp_path)
    message = str(error.value)
    assert str(path) in message
    assert "line 19 (data row 17), column 5 ('chlorides')" in message and "1 non-finite value(s)" in message
    # Without a header the column has no name; the line is the data row.
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    with pytest.raises(ValueError, match=r"non-finite value .* at line 17 \(data row 17\), column 5;"):
        load_uci("redwine", tmp_path)
