"""User files as arrays: a CSV table with a header, or a folder of images with one subfolder per class.

Owns parsing and the errors that point at a line, cell or file; checks, splits and scaling are
datasets.py's and checks.py's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cadence.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
PIXEL_SCALE = 255.0  # folder images are divided by this: pixel values in [0, 1]
_GRAY_MODES = ("1", "L", "LA")


class CsvTable(NamedTuple):
    """A CSV file as arrays: features [N, F] float32, targets [N], the feature column names, and the class
    names when the targets are text (label i is classes[i]); None for numeric targets."""

    x: np.ndarray
    y: np.ndarray
    features: list[str]
    classes: list[str] | None


def load_csv(path: str | Path, target: str | None) -> CsvTable:
    """Read a CSV file with a header row into features, targets, the feature names and the class names.

    Every column but `target` is a feature and must be numeric. The targets are int64 class indices when
    every value is written as an integer (label = the integer) or every value is text (classes = the
    sorted distinct values, e.g. "setosa"), float32 otherwise (regression).

    Raises:
        DataError: missing or empty file, no header, unknown or unset target, a ragged row, a
            non-numeric feature cell or a value beyond float32 (named by line, column and value), or a
            target column that mixes numbers and text.
    """
    path = Path(path)
    header, lines, rows = _read_rows(path)
    if target is None:
        raise DataError(
            f"{path} needs a target column to predict; none was given. "
            f"Fix: pass --target (or data.target) with one of: {', '.join(header)}."
        )
    if header.count(target) != 1:
        problem = "is not a column" if target not in header else "names more than one column"
        raise DataError(f"target {target!r} {problem} of {path}. Columns: {', '.join(header)}.")
    if len(header) < 2:
        raise DataError(f"{path} has only the target column {target!r}. Fix: add at least one feature column.")
    t = header.index(target)
    features = [name for i, name in enumerate(header) if i != t]
    cells = np.array(rows, dtype=object)
    x = parse_features(np.delete(cells, t, axis=1), path, lines, features)
    y, classes = _parse_target(cells[:, t], path, lines, target)
    return CsvTable(x, y, features, classes)


def csv_chunks(path: str | Path, rows: int) -> Iterator[tuple[list[str], list[int], list[list[str]]]]:
    """A CSV file read `rows` data rows at a time, for inputs too large to hold: yields (header, the file
    line of each row, the rows); blank lines skipped, every row checked against the header.

    Raises:
        DataError: missing or unreadable file, no header, a ragged row (named by its line).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next((row for row in reader if any(c.strip() for c in row)), None)
            if header is None:
                raise DataError(f"CSV file {path} is empty. Fix: write a header row, then data rows.")
            header = [c.strip() for c in header]
            lines: list[int] = []
            chunk: list[list[str]] = []
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"line {reader.line_num} of {path} has {len(row)} fields but the header has "
                        f"{len(header)}. Fix: give every row one value per column."
                    )
                lines.append(reader.line_num)
                chunk.append(row)
                if len(chunk) == rows:
                    yield header, lines, chunk
                    lines, chunk = [], []
            if chunk:
                yield header, lines, chunk
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist. Fix: pass the path of a .csv file.") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} is not a readable UTF-8 CSV file: {err}.") from None


def _read_rows(path: Path) -> tuple[list[str], list[int], list[list[str]]]:
    """Header, the file line number of each data row, and the data rows; blank lines are skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: drop a BOM from Excel exports
            reader = csv.reader(f, skipinitialspace=True)
            lines = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist. Fix: pass the path of a .csv file.") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} is not a readable UTF-8 CSV file: {err}.") from None
    if not lines:
        raise DataError(f"CSV file {path} is empty. Fix: write a header row of column names, then data rows.")
    header = [c.strip() for c in lines[0][1]]
    if all(_is_number(c) for c in header):
        raise DataError(
            f"the first row of {path} must name the columns; got numbers {header[:5]}. "
            "Fix: add a header row of column names."
        )
    if len(lines) == 1:
        raise DataError(f"CSV file {path} has a header but no data rows.")
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise DataError(
                f"line {line} of {path} has {len(row)} fields but the header has {len(header)}. "
                "Fix: give every row one value per column."
            )
    return header, [line for line, _ in lines[1:]], [row for _, row in lines[1:]]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_features(cells: np.ndarray, path: Path, lines: list[int], columns: list[str]) -> np.ndarray:
    """Feature cells (text) as float32, or a DataError naming the line, column and value of the first
    cell that is not a number, not finite, or beyond float32."""
    try:
        # float64 first: a value such as 1e39 is finite there, so it is reported as too large, not as inf
        values = cells.astype(np.float64)
    except ValueError:
        for (row, col), value in np.ndenumerate(cells):  # slow path, only to name the bad cell
            if not _is_number(value):
                raise DataError(
                    f"{path} line {lines[row]}, column {columns[col]!r}: {value!r} is not a number. "
                    "Fix: encode categories as numbers and fill empty cells."
                ) from None
        raise AssertionError("unreachable: astype failed but every cell parsed") from None
    limit = float(np.finfo(np.float32).max)
    bad = ~np.isfinite(values) | (np.abs(values) > limit)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = cells[row, col]
        why = (
            f"is beyond float32 (+-{limit:.3g}), which training uses. Fix: rescale that column (e.g. log, or "
            "divide by a constant)"
            if np.isfinite(values[row, col])
            else "is not finite (NaN or inf). Fix: impute or drop that row"
        )
        raise DataError(
            f"{path} line {lines[row]}, column {columns[col]!r}: {value!r} {why}"
            + (f"; {int(bad.sum())} such cells in all." if bad.sum() > 1 else ".")
        )
    return values.astype(np.float32)


def _parse_target(
    values: np.ndarray, path: Path, lines: list[int], target: str
) -> tuple[np.ndarray, list[str] | None]:
    """(int64 labels, None) for integer values, (float32 targets, None) for other numbers, and
    (int64 indices, sorted class names) for text values."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64), None
    except ValueError:
        pass
    numeric = [_is_number(v) for v in values]
    if all(numeric):
        return values.astype(np.float32), None
    empty = [row for row, v in enumerate(values) if not str(v).strip()]
    if empty:
        raise DataError(
            f"{path} line {lines[empty[0]]}, target column {target!r} is empty. "
            "Fix: fill in every target or drop those rows."
        )
    if any(numeric):  # mostly one kind with a stray value of the other: a typo, not a class
        first_text = numeric.index(False)
        first_number = numeric.index(True)
        raise DataError(
            f"{path} target column {target!r} mixes numbers ({values[first_number]!r} at line "
            f"{lines[first_number]}) and text ({values[first_text]!r} at line {lines[first_text]}). Fix: write "
            "every class as text (e.g. setosa) or as an integer code 0..K-1, or give a numeric target for "
            "regression."
        )
    classes, y = np.unique(np.char.strip(values.astype(str)), return_inverse=True)
    return y.astype(np.int64), [str(c) for c in classes]


def load_image_folder(
    path: str | Path, size: tuple[int, int] = (28, 28)
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read `path/<class>/<image>` into x float32 [N, C, H, W] in [0, 1], y int64 [N], class names.

    Classes are the subfolder names, sorted; label i is class_names[i]. Images are resized to
    `size` = (H, W). C is 1 if every image is grayscale (Pillow mode 1, L or LA, or a palette of
    grays as GIFs use), else all are converted to RGB (C = 3).

    Raises:
        DataError: no such folder, no class subfolders or only one, a class with no images, an unreadable
            image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist. Fix: pass a folder with one subfolder per class.")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = len(_images_in(path))
        raise DataError(
            f"{path} has no class subfolders"
            + (f" ({loose} images lie directly in it)" if loose else "")
            + f". Fix: put the images of each class in their own subfolder, e.g. {path}/cat/1.png."
        )
    if len(classes) == 1:
        raise DataError(
            f"{path} has one class subfolder ({classes[0]}); a classifier needs at least two classes to tell "
            f"apart (with one, every prediction is trivially right). Fix: add a subfolder of images for each "
            f"other class, e.g. {path}/other/1.png."
        )
    height, width = size
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _images_in(path / name)
        if not files:
            raise DataError(
                f"class folder {path / name} has no images. Allowed suffixes: {', '.join(IMAGE_SUFFIXES)}. "
                "Fix: add images or remove the folder."
            )
        for file in files:
            try:
                arrays.append(_read_image(file, width, height))
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                raise DataError(f"cannot read image {file}: {err}. Fix: replace or delete the file.") from None
            labels.append(label)
    x = _stack(arrays, 3 if any(a.ndim == 3 for a in arrays) else 1, PIXEL_SCALE)
    return x, np.asarray(labels, dtype=np.int64), classes


def read_images(files: list[Path], size: tuple[int, int], channels: int, divide_by: float) -> np.ndarray:
    """Image files as float32 [N, C, H, W] read exactly as `load_image_folder` reads them for training:
    resized to `size` = (H, W), `channels` 1 (a colour image becomes Pillow's luminance) or 3 (gray is
    copied), pixel values divided by `divide_by` (PIXEL_SCALE for folders, 1 for IDX pixels 0..255).

    Raises:
        DataError: a file that is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    height, width = size
    arrays = []
    for file in files:
        try:
            a = _read_image(Path(file), width, height)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read image {file}: {err}. Fix: replace or delete the file.") from None
        if channels == 1 and a.ndim == 3:
            with Image.fromarray(a) as img:
                a = np.asarray(img.convert("L"))
        arrays.append(a)
    return _stack(arrays, channels, divide_by)


def _stack(arrays: list[np.ndarray], channels: int, divide_by: float) -> np.ndarray:
    # Gray [H, W] -> [C, H, W] (copied to 3 channels for colour data); RGB [H, W, 3] -> [3, H, W].
    chw = [a.transpose(2, 0, 1) if a.ndim == 3 else np.repeat(a[None], channels, axis=0) for a in arrays]
    return np.stack(chw).astype(np.float32) / divide_by


def images_in(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (hidden files left out)."""
    return _images_in(Path(folder))


def _read_image(file: Path, width: int, height: int) -> np.ndarray:
    """[H, W] uint8 for a grayscale image, [H, W, 3] for a colour one."""
    from PIL import Image

    with Image.open(file) as img:
        # GIFs are palette (P) images even when gray: such a palette of grays still counts as gray.
        palette = img.mode == "P"
        img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
        if img.size != (width, height):  # Pillow sizes are (width, height)
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        a = np.asarray(img)
    if palette and (a == a[..., :1]).all():
        a = a[..., 0]
    return a


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
