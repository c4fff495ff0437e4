"""CSV tables and image folders read into arrays, and the errors that point at the bad line or file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cadence.config import DataConfig
from cadence.data.datasets import load_data
from cadence.data.files import PIXEL_SCALE, load_csv, load_image_folder, read_images
from cadence.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- CSV --------------------------------------------------------------------------------------------


def test_csv_with_integer_target_gives_int_labels_and_feature_names(tmp_path):
    path = write(tmp_path / "t.csv", "height,label,weight\n1.5,0,10\n2.5,2,-20\n3,1,1e2\n")
    x, y, names, classes = load_csv(path, "label")
    assert names == ["height", "weight"]
    assert classes is None
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1.5, 10], [2.5, -20], [3, 100]])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 2, 1])


def test_csv_with_a_fractional_target_gives_float_targets(tmp_path):
    path = write(tmp_path / "r.csv", "a,b,price\n1,2,3\n4,5,6.25\n")
    _, y, _, _ = load_csv(path, "price")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [3.0, 6.25])


def test_csv_tolerates_bom_spaces_quotes_and_blank_lines(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbf"a", b ,y\n\n 1, "2",0\n\n3,4, 1\n')
    x, y, names, _ = load_csv(path, "y")
    assert names == ["a", "b"]
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])


def test_csv_missing_target_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,2,0\n")
    with pytest.raises(DataError, match=r"target 'class' is not a column of .*t\.csv\. Columns: a, b, label\."):
        load_csv(path, "class")


def test_csv_without_target_says_to_pass_target_and_lists_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,2,0\n")
    with pytest.raises(DataError, match="pass --target .* one of: a, b, label"):
        load_csv(path, None)


def test_csv_non_numeric_cell_names_line_column_and_value(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,2,0\n\n3,four,1\n")
    with pytest.raises(DataError, match=r"t\.csv line 4, column 'b': 'four' is not a number"):
        load_csv(path, "label")


def test_csv_empty_feature_cell_is_named(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,,0\n")
    with pytest.raises(DataError, match="line 2, column 'b': '' is not a number"):
        load_csv(path, "label")


def test_csv_text_class_labels_become_classes_named_by_their_values(tmp_path):
    path = write(tmp_path / "iris.csv", "petal,species\n1.4,setosa\n4.7, versicolor\n1.3,setosa\n6.0,virginica\n")
    _, y, _, classes = load_csv(path, "species")
    assert classes == ["setosa", "versicolor", "virginica"]  # sorted, surrounding spaces dropped
    np.testing.assert_array_equal(y, [0, 1, 0, 2])


def test_csv_target_mixing_numbers_and_text_names_both(tmp_path):
    path = write(tmp_path / "t.csv", "a,y\n1,0.5\n2,1.5\n3,n/a\n")
    with pytest.raises(
        DataError, match=r"target column 'y' mixes numbers \('0.5' at line 2\) and text \('n/a' at line 4\)"
    ):
        load_csv(path, "y")


def test_csv_value_beyond_float32_is_named_as_such_not_as_inf(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,1e39,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': '1e39' is beyond float32 .*rescale"):
        load_csv(path, "y")


def test_csv_nan_cell_is_named_by_line_and_column(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\nnan,1,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'a': 'nan' is not finite"):
        load_csv(path, "y")


def test_load_data_keeps_csv_class_and_feature_names(tmp_path):
    rows = [f"{i % 7},{i % 3},{['cat', 'dog'][i % 2]}" for i in range(40)]
    path = write(tmp_path / "pets.csv", "w,h,kind\n" + "\n".join(rows) + "\n")
    data = load_data(DataConfig(name=str(path), target="kind"))
    assert (data.task, data.n_classes, data.class_names) == ("classification", 2, ["cat", "dog"])
    assert (data.feature_names, data.target_name) == (["w", "h"], "kind")


def test_load_data_names_integer_csv_classes_by_their_codes(tmp_path):
    rows = [f"{i % 7},{i % 3}" for i in range(30)]
    data = load_data(DataConfig(name=str(write(tmp_path / "c.csv", "w,k\n" + "\n".join(rows) + "\n")), target="k"))
    assert data.class_names == ["0", "1", "2"]


def test_text_target_with_task_regression_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", "a,y\n1,cat\n2,dog\n")
    with pytest.raises(DataError, match="holds text .* cannot be regressed on"):
        load_data(DataConfig(name=str(path), target="y", task="regression"))


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_csv_raises(tmp_path, text):
    with pytest.raises(DataError, match=r"CSV file .*t\.csv is empty"):
        load_csv(write(tmp_path / "t.csv", text), "y")


def test_csv_with_only_a_header_raises(tmp_path):
    with pytest.raises(DataError, match="has a header but no data rows"):
        load_csv(write(tmp_path / "t.csv", "a,y\n"), "y")


def test_csv_without_header_row_raises(tmp_path):
    with pytest.raises(DataError, match="first row .* must name the columns.*add a header row"):
        load_csv(write(tmp_path / "t.csv", "1,2,0\n3,4,1\n"), "y")


def test_csv_ragged_row_names_its_line(tmp_path):
    with pytest.raises(DataError, match="line 3 of .* has 2 fields but the header has 3"):
        load_csv(write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,4\n"), "y")


def test_missing_csv_file_raises(tmp_path):
    with pytest.raises(DataError, match="CSV file .*nope.csv does not exist"):
        load_csv(tmp_path / "nope.csv", "y")


def test_load_data_on_a_classification_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{a:.4f},{b:.4f},{int(a > 0)}" for a, b in rng.standard_normal((50, 2))]
    path = write(tmp_path / "cls.csv", "a,b,label\n" + "\n".join(rows) + "\n")
    data = load_data(DataConfig(name=str(path), target="label", val_fraction=0.2, test_fraction=0.2))
    assert (data.task, data.n_classes, data.name) == ("classification", 2, "cls.csv")
    assert data.input_shape == (2,)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (30, 10, 10)
    assert data.y_train.dtype == torch.int64


def test_load_data_on_a_regression_csv(tmp_path):
    path = write(tmp_path / "reg.csv", "x,y\n" + "\n".join(f"{i},{i / 4}" for i in range(20)) + "\n")
    data = load_data(DataConfig(name=str(path), target="y", val_fraction=0.1, test_fraction=0.2))
    assert data.task == "regression" and data.n_classes is None
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (14, 2, 4)


# --- image folders ----------------------------------------------------------------------------------


def save(path: Path, mode: str, color, size=(12, 10)) -> None:
    """A uniform image of `color` and size (width, height), so resizing keeps its pixel values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_gray_folder_loads_as_one_channel_in_unit_range_with_sorted_classes(tmp_path):
    save(tmp_path / "dog" / "a.png", "L", 51)
    save(tmp_path / "dog" / "b.bmp", "L", 255, size=(30, 5))
    save(tmp_path / "cat" / "a.png", "L", 0)
    save(tmp_path / "cat" / "b.gif", "L", 102)
    save(tmp_path / "cat" / "c.png", "1", 1)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    x, y, classes = load_image_folder(tmp_path, size=(6, 8))
    assert classes == ["cat", "dog"]
    assert x.shape == (5, 1, 6, 8) and x.dtype == np.float32  # size is (H, W)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(x.reshape(5, -1).mean(axis=1), [0.0, 0.4, 1.0, 0.2, 1.0], atol=1e-6)


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    save(tmp_path / "a" / "gray.png", "L", 51)
    save(tmp_path / "b" / "red.jpg", "RGB", (255, 0, 0))
    save(tmp_path / "b" / "blue.gif", "RGB", (0, 0, 255))  # a palette image with a colour palette
    x, y, _ = load_image_folder(tmp_path, size=(4, 4))
    assert x.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(x[0], 0.2, atol=1e-6)  # gray copied into all three channels
    np.testing.assert_allclose(x[1].mean(axis=(1, 2)), [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(x[2].mean(axis=(1, 2)), [1.0, 0.0, 0.0], atol=0.02)  # JPEG is lossy


def test_missing_image_folder_raises(tmp_path):
    with pytest.raises(DataError, match="image folder .*nope does not exist"):
        load_image_folder(tmp_path / "nope")


def test_folder_without_class_subfolders_says_how_to_lay_it_out(tmp_path):
    save(tmp_path / "1.png", "L", 0)
    with pytest.raises(DataError, match=r"no class subfolders \(1 images lie directly in it\).*cat/1.png"):
        load_image_folder(tmp_path)


def test_class_folder_without_images_is_named(tmp_path):
    save(tmp_path / "cat" / "1.png", "L", 0)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*dog has no images. Allowed suffixes: .png"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("content", [b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["text", "cut-png"])
def test_unreadable_image_is_named(tmp_path, content):
    save(tmp_path / "ant" / "1.png", "L", 0)
    save(tmp_path / "cat" / "1.png", "L", 0)
    (tmp_path / "cat" / "2.png").write_bytes(content)
    with pytest.raises(DataError, match=r"cannot read image .*cat/2\.png"):
        load_image_folder(tmp_path)


def test_truncated_image_data_is_named(tmp_path):
    save(tmp_path / "ant" / "1.png", "L", 0)
    save(tmp_path / "cat" / "1.png", "L", 0)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "cat" / "2.png").write_bytes((tmp_path / "big.png").read_bytes()[:-200])
    (tmp_path / "big.png").unlink()
    with pytest.raises(DataError, match=r"cannot read image .*cat/2\.png"):
        load_image_folder(tmp_path)


def test_load_data_on_an_image_folder(tmp_path):
    for name, value in (("ant", 20), ("bee", 200)):
        for i in range(5):
            save(tmp_path / name / f"{i}.png", "L", value + i)
    data = load_data(DataConfig(name=str(tmp_path), image_size=(6, 8), val_fraction=0.2, test_fraction=0.2))
    assert data.input_shape == (1, 6, 8)
    assert (data.n_classes, data.class_names) == (2, ["ant", "bee"])
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (6, 2, 2)
    # Stratified: each of val and test holds one image of each class.
    assert sorted(data.y_val.tolist()) == [0, 1] and sorted(data.y_test.tolist()) == [0, 1]


def test_one_class_folder_is_refused_before_reading_images(tmp_path):
    save(tmp_path / "cat" / "1.png", "L", 0)
    (tmp_path / "cat" / "2.png").write_bytes(b"never read")
    with pytest.raises(DataError, match=r"has one class subfolder \(cat\); a classifier needs at least two"):
        load_image_folder(tmp_path)


def test_read_images_reads_a_file_as_training_read_it(tmp_path):
    for name, value in (("ant", 20), ("bee", 200)):
        save(tmp_path / name / "0.png", "L", value)
    x, _, _ = load_image_folder(tmp_path, size=(6, 8))
    again = read_images([tmp_path / "ant" / "0.png", tmp_path / "bee" / "0.png"], (6, 8), 1, PIXEL_SCALE)
    np.testing.assert_array_equal(again, x)
