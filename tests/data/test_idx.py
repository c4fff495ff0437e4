"""IDX reading/writing, and finding, downloading and checking MNIST-style data sets."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cadence.data.idx import FILES, load_idx_dataset, read_idx, write_idx
from cadence.errors import DataError
from tests.data.conftest import closed_port_url

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def sample_array(dtype, shape=(3, 4, 5)) -> np.ndarray:
    """Values spanning the dtype: its extremes, negatives (if signed) and fractions (if float)."""
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        a.flat[:2] = [info.min, info.max]
    else:
        a = (rng.standard_normal(shape) * 1e3).astype(dtype)
        a.flat[:3] = [np.finfo(dtype).max, -np.finfo(dtype).tiny, -0.5]
    return a


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_write_then_read_returns_the_same_array(tmp_path, dtype, suffix):
    a = sample_array(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_read_matches_a_hand_written_big_endian_file(tmp_path):
    # Type 0x0B (int16), 2 dims (2, 3), values written big-endian by hand: the format's own spec.
    values = [-2, -1, 0, 1, 256, 32767]
    raw = b"\x00\x00\x0b\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    raw += b"".join(v.to_bytes(2, "big", signed=True) for v in values)
    (tmp_path / "hand").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "hand"), np.array(values, dtype=np.int16).reshape(2, 3))
    write_idx(tmp_path / "ours", np.array(values, dtype=np.int16).reshape(2, 3))
    assert (tmp_path / "ours").read_bytes() == raw


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    a = sample_array(np.uint8)
    write_idx(tmp_path / "a.gz", a)
    (tmp_path / "a.gz").rename(tmp_path / "no-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), a)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_truncated_file_raises_naming_the_file(tmp_path, suffix):
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    write_idx(path, sample_array(np.float32))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=rf"{path.name}.*(truncated|damaged)"):
        read_idx(path)


def test_file_cut_inside_its_header_raises(tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")  # says 3 dims, holds 1
    with pytest.raises(DataError, match="cut is truncated: 8 bytes, shorter than its 16-byte header"):
        read_idx(path)


def test_trailing_bytes_raise(tmp_path):
    path = tmp_path / "long"
    write_idx(path, sample_array(np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path)


@pytest.mark.parametrize(
    "head",
    [b"\x01\x00\x08\x01", b"\x00\x00\x0a\x01", b"PK\x03\x04", b""],
    ids=["nonzero-first-bytes", "unknown-type", "zip", "empty"],
)
def test_bad_magic_raises_naming_the_file_and_allowed_types(tmp_path, head):
    path = tmp_path / "labels.idx"
    path.write_bytes(head + b"\x00\x00\x00\x01\x07")
    with pytest.raises(DataError, match=r"labels\.idx is not an IDX file.*08, 09, 0b, 0c, 0d, 0e"):
        read_idx(path)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file .*nope"):
        read_idx(tmp_path / "nope")


def test_write_rejects_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="int64 .*allowed: uint8, int8, int16, int32, float32, float64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


# --- finding and downloading the four files -------------------------------------------------------


def small_set(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        FILES[0]: rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, size=20, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, size=10, dtype=np.uint8),
    }


def write_set(directory: Path, arrays: dict[str, np.ndarray], files=FILES, gz: bool = True) -> dict[str, str]:
    """Write the files; return their SHA-256 by standard (.gz) name."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name in files:
        path = directory / (name if gz else name.removesuffix(".gz"))
        write_idx(path, arrays[name])
        sums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def assert_loaded(result, arrays) -> None:
    for got, name in zip(result, FILES, strict=True):
        np.testing.assert_array_equal(got, arrays[name])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server on a free port serving tmp_path/mirror; yields (directory, base URL)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def test_files_in_data_dir_are_used_gzipped_or_not(tmp_path, no_system_datasets):
    arrays = small_set()
    write_set(tmp_path / "d", arrays, files=FILES[:2], gz=True)
    write_set(tmp_path / "d", arrays, files=FILES[2:], gz=False)
    assert_loaded(load_idx_dataset("mnist", data_dir=tmp_path / "d"), arrays)


def test_files_under_cadence_data_slash_name_are_found(isolated_data_env, no_system_datasets):
    arrays = small_set()
    write_set(isolated_data_env / "cadence-data" / "mnist", arrays)
    assert_loaded(load_idx_dataset("mnist"), arrays)


def test_data_dir_is_searched_before_cadence_data(tmp_path, isolated_data_env, no_system_datasets):
    write_set(isolated_data_env / "cadence-data", small_set(seed=1))
    arrays = small_set(seed=2)
    write_set(tmp_path / "d", arrays)
    assert_loaded(load_idx_dataset("mnist", data_dir=tmp_path / "d"), arrays)


def test_download_verifies_checksums_and_lands_atomically_in_cache(tmp_path, mirror, no_system_datasets):
    served, url = mirror
    arrays = small_set()
    sums = write_set(served, arrays)
    cache = tmp_path / "cache"
    result = load_idx_dataset("mnist", cache_dir=cache, mirrors=[url], checksums=sums)
    assert_loaded(result, arrays)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no temp files left behind
    for name in FILES:
        assert (cache / name).read_bytes() == (served / name).read_bytes()
    # The second load needs no network: the mirror list is unreachable now.
    assert_loaded(load_idx_dataset("mnist", cache_dir=cache, mirrors=[closed_port_url()]), arrays)


def test_default_cache_is_under_xdg_cache_home(isolated_data_env, mirror, no_system_datasets):
    served, url = mirror
    sums = write_set(served, small_set())
    load_idx_dataset("fashion-mnist", mirrors=[url], checksums=sums)
    assert sorted(p.name for p in (isolated_data_env / "cache" / "cadence" / "fashion-mnist").iterdir()) == sorted(
        FILES
    )


def test_next_mirror_is_tried_when_the_first_is_unreachable(tmp_path, mirror, no_system_datasets):
    served, url = mirror
    arrays = small_set()
    sums = write_set(served, arrays)
    result = load_idx_dataset("mnist", cache_dir=tmp_path / "c", mirrors=[closed_port_url(), url], checksums=sums)
    assert_loaded(result, arrays)


def test_only_files_missing_from_the_cache_are_downloaded(tmp_path, mirror, no_system_datasets):
    served, url = mirror
    arrays = small_set()
    sums = write_set(tmp_path / "cache", arrays, files=FILES[:2])
    sums |= write_set(served, arrays, files=FILES[2:])  # the mirror lacks the first two: a 404 if asked
    assert_loaded(load_idx_dataset("mnist", cache_dir=tmp_path / "cache", mirrors=[url], checksums=sums), arrays)


def test_wrong_checksum_raises_and_keeps_nothing_in_cache(tmp_path, mirror, no_system_datasets):
    served, url = mirror
    sums = write_set(served, small_set())
    sums[FILES[0]] = "0" * 64
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"{FILES[0]}: SHA-256 [0-9a-f]{{64}}, expected 0{{64}}"):
        load_idx_dataset("mnist", cache_dir=cache, mirrors=[url], checksums=sums)
    assert list(cache.iterdir()) == []


def test_unreachable_mirror_raises_naming_the_files_and_where_to_put_them(
    tmp_path, isolated_data_env, no_system_datasets
):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_idx_dataset("mnist", data_dir=tmp_path / "mine", cache_dir=cache, mirrors=[closed_port_url()])
    message = str(info.value)
    assert "mnist is not on this machine and could not be downloaded" in message
    assert all(name in message for name in FILES)
    for place in (tmp_path / "mine", isolated_data_env / "cadence-data", no_system_datasets / "mnist", cache):
        assert f"\n  {place}\n" in message
    assert "CADENCE_DATA" in message
    assert "apt-get" not in message  # Debian packages Fashion-MNIST only
    assert not cache.exists() or list(cache.iterdir()) == []


def test_missing_fashion_mnist_suggests_the_debian_package(no_system_datasets):
    with pytest.raises(DataError, match="sudo apt-get install dataset-fashion-mnist"):
        load_idx_dataset("fashion-mnist")


def test_labels_and_images_of_different_counts_raise(tmp_path, no_system_datasets):
    arrays = small_set()
    arrays[FILES[3]] = arrays[FILES[3]][:9]
    write_set(tmp_path / "d", arrays)
    with pytest.raises(
        DataError, match="t10k-images-idx3-ubyte.gz has 10 images but .*t10k-labels.*gz has 9 labels"
    ):
        load_idx_dataset("mnist", data_dir=tmp_path / "d")


def test_unknown_data_set_name_lists_the_allowed_ones():
    with pytest.raises(DataError, match="unknown IDX data set 'kmnist'. Allowed: mnist, fashion-mnist"):
        load_idx_dataset("kmnist")


def test_debian_fashion_mnist_loads_with_6000_per_class(debian_fashion_dir):
    x_train, y_train, x_test, y_test = load_idx_dataset("fashion-mnist")
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
