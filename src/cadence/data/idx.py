"""IDX files (the MNIST format): read, write, and find or download MNIST and Fashion-MNIST.

Owns the file format, where the four files are looked for, checksummed downloads and atomic writes;
splitting and scaling belong to datasets.py.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cadence.errors import DataError

# IDX type byte -> big-endian element type (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# SHA-256 of the published .gz files. torchvision's mnist.py lists only MD5, so these are the values that
# several independent projects pin for the same files (for MNIST e.g. torchvision's Ruby port; for
# Fashion-MNIST projects pinning the Zalando S3 and GitHub copies); the sources agree with each other.
# They were not re-hashed here (no network). Debian's dataset-fashion-mnist re-gzips the files (no stored
# name, a 2020 mtime), so its .gz bytes hash differently: files found on disk are checked by structure.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

# Where Debian packages put data sets (dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist).
SYSTEM_DIR = Path("/usr/share/datasets")
APT_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}
DOWNLOAD_TIMEOUT_SECONDS = 30.0


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw, into an array of native byte order.

    Raises:
        DataError: the file is missing, truncated, not gzip/IDX, or its size disagrees with its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err.strerror or err}.") from None
    if raw[:2] == _GZIP_MAGIC:  # detect by content: IDX itself always starts with two zero bytes
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"IDX file {path} is a damaged or truncated gzip file ({err}). "
                "Fix: delete it and download it again."
            ) from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}; expected 0000 then a type "
            f"byte in {{{', '.join(f'{c:02x}' for c in IDX_DTYPES)}}} and the number of dimensions. "
            "Fix: pass an IDX file such as train-images-idx3-ubyte.gz."
        )
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: {len(raw)} bytes, but shape {shape} of {dtype.name} "
            f"needs {expected}. Fix: delete it and download it again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped if `path` ends in .gz, atomically (temp file + rename).

    Raises:
        DataError: the dtype has no IDX code, or the array has no dimensions.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        allowed = ", ".join(dt.newbyteorder("=").name for dt in IDX_DTYPES.values())
        raise DataError(f"cannot write dtype {array.dtype} as IDX to {path}; allowed: {allowed}. Fix: astype().")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"IDX needs 1 to 255 dimensions; got shape {array.shape} for {path}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)  # mtime=0: same array, same bytes
    _write_atomic(path, [data])


def _write_atomic(path: Path, chunks: Iterable[bytes], expected_sha256: str | None = None) -> str:
    """Write chunks to a temp file beside `path`, fsync, and rename it over `path`; return the SHA-256.

    A crash leaves either the old file or the new one, never half of one. With `expected_sha256`, a
    mismatch discards the temp file and leaves `path` as it was.
    """
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if expected_sha256 is None or digest.hexdigest() == expected_sha256:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; not possible on every platform, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_cache_dir(name: str) -> Path:
    """`$XDG_CACHE_HOME/cadence/<name>`, else `~/.cache/cadence/<name>`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "cadence" / name


def search_dirs(name: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for the four files, in order: data_dir, $CADENCE_DATA, Debian's, the cache."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("CADENCE_DATA"):
        dirs += [Path(os.environ["CADENCE_DATA"]), Path(os.environ["CADENCE_DATA"]) / name]
    dirs.append(SYSTEM_DIR / name)
    dirs.append(Path(cache_dir) if cache_dir is not None else default_cache_dir(name))
    return dirs


def _find(directory: Path, file: str) -> Path | None:
    """The .gz file or its un-gzipped twin in `directory`, if either exists."""
    for candidate in (directory / file, directory / file.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(
    name: str,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST as (x_train, y_train, x_test, y_test), downloading if needed.

    The first directory of `search_dirs` holding all four files is used. Otherwise the missing files
    are downloaded into the cache directory from `mirrors` (default `MIRRORS[name]`) and each is
    checked against `checksums` (file name -> SHA-256; default `CHECKSUMS[name]`) before it is kept.

    Args:
        cache_dir: where downloads are kept; default `$XDG_CACHE_HOME/cadence/<name>`.

    Raises:
        DataError: unknown name, files missing and not downloadable, bad checksum, or malformed files.
    """
    if name not in MIRRORS:
        raise DataError(f"unknown IDX data set {name!r}. Allowed: {', '.join(MIRRORS)}.")
    dirs = search_dirs(name, data_dir, cache_dir)
    cache = dirs[-1]
    for directory in dirs:
        found = [_find(directory, f) for f in FILES]
        if all(found):
            break
    else:
        found = _download_missing(name, cache, dirs, mirrors, checksums)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in found)
    _check_pair(x_train, y_train, found[0], found[1])
    _check_pair(x_test, y_test, found[2], found[3])
    return x_train, y_train, x_test, y_test


def _check_pair(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{images_path} must hold uint8 images [N, rows, cols] and {labels_path} uint8 labels [N]; "
            f"got {images.dtype} {images.shape} and {labels.dtype} {labels.shape}."
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels. "
            "Fix: use files from the same release (delete both and download them again)."
        )


def _download_missing(
    name: str,
    cache: Path,
    dirs: list[Path],
    mirrors: Sequence[str] | None,
    checksums: Mapping[str, str] | None,
) -> list[Path]:
    """Download into `cache` the files it lacks; raise DataError saying where to put them if that fails."""
    mirrors = list(MIRRORS[name] if mirrors is None else mirrors)
    sums = {**CHECKSUMS[name], **(checksums or {})}
    failures: list[str] = [] if mirrors else ["no download mirrors given"]
    found: list[Path] = []
    for file in FILES:
        have = _find(cache, file) or _download(file, cache, mirrors, sums[file], failures)
        if have is None:
            break  # the rest would fail the same way; offline, each try can cost a timeout
        found.append(have)
    if len(found) == len(FILES):
        return found
    places = "\n  ".join(dict.fromkeys(str(d) for d in dirs))
    apt = APT_PACKAGES.get(name)
    raise DataError(
        f"{name} is not on this machine and could not be downloaded:\n  "
        + "\n  ".join(failures)
        + f"\nFix: put the four files {', '.join(FILES)} (gzipped or not) in one of:\n  {places}\n"
        "or in a directory named by CADENCE_DATA=<dir> or data_dir."
        + (f"\nOr install the Debian package: sudo apt-get install {apt}" if apt else "")
    )


def _download(file: str, cache: Path, mirrors: list[str], sha256: str, failures: list[str]) -> Path | None:
    """Fetch `file` from the first mirror that serves it with the expected SHA-256; record failures."""
    target = cache / file
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file
        try:
            cache.mkdir(parents=True, exist_ok=True)
            got = _fetch(url, target, sha256)
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
            failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
            continue
        if got != sha256:
            failures.append(f"{url}: SHA-256 {got}, expected {sha256} (file discarded)")
            continue
        return target
    return None


def _fetch(url: str, target: Path, sha256: str) -> str:
    """Stream `url` into `target`, kept only if its SHA-256 matches; return the hash received."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as resp:
        return _write_atomic(target, iter(lambda: resp.read(1 << 20), b""), expected_sha256=sha256)
