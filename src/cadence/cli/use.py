"""`cadence predict`, `cadence evaluate` and `cadence export`: use a trained run on new data.

Each command loads the run with `cadence.load` (models/artefact.py) and reads new inputs in chunks from
a CSV file, a JSONL file or a folder of images; the rules (columns by name, labels by name) live there.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from cadence.cli.app import app
from cadence.errors import CadenceError

Opt = typer.Option
Arg = typer.Argument
CHUNK_ROWS = 10_000  # rows read, predicted and written at a time: memory stays bounded for any file size

RunDir = Annotated[Path, Arg(help="run directory written by `cadence train` (or its model.safetensors)")]
DataOpt = Annotated[Path, Opt("--data", help="FILE.csv | FILE.jsonl | a folder of images")]
ModelOpt = Annotated[
    str | None, Opt("--model", help="the package.module:factory the run names, named again (to import it)")
]
TrustOpt = Annotated[bool, Opt(help="import the package.module:factory the run names without naming it")]
DebugOpt = Annotated[bool, Opt(help="show tracebacks")]


def _fail(err: Exception, debug: bool) -> None:
    from rich.console import Console

    if debug:
        raise err
    code = err.exit_code if isinstance(err, CadenceError) else 1
    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(run_dir: Path, model: str | None, trust_code: bool):
    from cadence.models.artefact import load

    return load(run_dir, model, trust_code=trust_code)


@app.command()
def predict(
    run_dir: RunDir,
    data: DataOpt,
    out: Annotated[Path | None, Opt(help="write predictions to this CSV file (default: standard output)")] = None,
    id_column: Annotated[
        str | None, Opt(help="column copied to the output to identify each row (default: a column named id)")
    ] = None,
    chunk_rows: Annotated[int, Opt(help="rows read and predicted at a time", min=1)] = CHUNK_ROWS,
    model: ModelOpt = None,
    trust_code: TrustOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Predict every row (or image) of --data with a trained run: one CSV row per input, with its id
    (or row number, or file), the prediction (a label name for classification) and class probabilities."""
    try:
        trained = _load(run_dir, model, trust_code)
        target = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115  closed below
        try:
            writer = csv.writer(target)
            for i, (id_name, ids, x, _) in enumerate(_chunks(trained, data, chunk_rows, id_column, False)):
                if i == 0:
                    probs = [f"p_{c}" for c in (trained.labels or range(trained.n_classes or 0))]
                    writer.writerow([id_name, "prediction", *(probs if trained.task == "classification" else [])])
                _write(writer, trained, ids, x)
        finally:
            if out:
                target.close()
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if out:
        typer.echo(f"predictions: {out}", err=True)


def _write(writer, trained, ids: list, x) -> None:
    if trained.task != "classification":
        values = trained.predict(x)
        for row_id, value in zip(ids, values.reshape(len(ids), -1), strict=True):
            writer.writerow([row_id, *(f"{v:.7g}" for v in value)])
        return
    proba = trained.predict_proba(x)
    names = trained.labels or list(range(trained.n_classes))
    for row_id, p in zip(ids, proba, strict=True):
        writer.writerow([row_id, names[int(p.argmax())], *(f"{v:.6g}" for v in p)])


@app.command()
def evaluate(
    run_dir: RunDir,
    data: DataOpt,
    as_json: Annotated[bool, Opt("--json", help="print the metrics as one JSON object")] = False,
    chunk_rows: Annotated[int, Opt(help="rows read at a time", min=1)] = CHUNK_ROWS,
    model: ModelOpt = None,
    trust_code: TrustOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score a trained run on new labelled data: a CSV with the training target column, a JSONL file with
    "y", or a folder with one subfolder per class. Prints loss and the task's metrics."""
    try:
        import numpy as np

        trained = _load(run_dir, model, trust_code)
        parts = list(_chunks(trained, data, chunk_rows, None, True))
        x = np.concatenate([p[2] for p in parts])
        y = np.concatenate([np.asarray(p[3], dtype=object if trained.labels else None) for p in parts])
        if trained.task != "classification":
            y = y.astype(np.float32)
        metrics = {"samples": len(x), **trained.evaluate(x, y)}
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(json.dumps(metrics))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_dir} on {data}")
    for key in metrics:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:,}" if isinstance(v, int) else f"{v:.4f}" for v in metrics.values()))
    Console().print(table)


@app.command()
def export(
    run_dir: RunDir,
    fmt: Annotated[str, Opt("--format", help="onnx | torchscript")] = "onnx",
    out: Annotated[Path | None, Opt(help="output file (default: RUN_DIR/model.onnx or model.pt)")] = None,
    model: ModelOpt = None,
    trust_code: TrustOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export a trained run for other runtimes: raw inputs in (the standardization is part of the graph),
    class probabilities (or predictions) out, label and feature names in the file's metadata."""
    try:
        from cadence.errors import ConfigError
        from cadence.models.export import FORMATS, SUFFIX
        from cadence.models.export import export as export_model

        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}. Allowed: {', '.join(FORMATS)}.")
        trained = _load(run_dir, model, trust_code)
        base = run_dir if run_dir.is_dir() else run_dir.parent
        path = export_model(trained, fmt, out or base / f"model{SUFFIX[fmt]}")
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    typer.echo(str(path))


# --- reading new inputs ------------------------------------------------------------------------------


def _chunks(trained, data: Path, rows: int, id_column: str | None, labelled: bool) -> Iterator[tuple]:
    """(id column name, ids, raw inputs, labels or None) per chunk of `data`."""
    from cadence.errors import DataError

    if data.is_dir():
        yield from _image_chunks(trained, data, rows, labelled)
    elif data.suffix.lower() == ".csv":
        yield from _csv_chunks(trained, data, rows, id_column, labelled)
    elif data.suffix.lower() == ".jsonl":
        yield from _jsonl_chunks(trained, data, rows, id_column, labelled)
    elif not data.exists():
        raise DataError(f"--data {data} does not exist.")
    else:
        raise DataError(f"--data {data}: expected a .csv file, a .jsonl file or a folder of images.")


def _id_index(header: list[str], id_column: str | None, where: Path) -> int | None:
    from cadence.errors import DataError

    if id_column is not None:
        if id_column not in header:
            raise DataError(f"--id-column {id_column!r} is not a column of {where}. Columns: {', '.join(header)}.")
        return header.index(id_column)
    lower = [h.lower() for h in header]
    return lower.index("id") if "id" in lower else None


def _csv_chunks(trained, path: Path, rows: int, id_column: str | None, labelled: bool) -> Iterator[tuple]:
    import numpy as np

    from cadence.data.files import csv_chunks, parse_features
    from cadence.errors import DataError

    done = 0
    for header, lines, chunk in csv_chunks(path, rows):
        id_at = _id_index(header, id_column, path)
        y_at = None
        if labelled:
            if trained.target not in header:
                raise DataError(
                    f"{path} lacks the target column {trained.target!r} the model was trained on; "
                    f"columns: {', '.join(header)}."
                )
            y_at = header.index(trained.target)
        cols = trained.columns(header)
        if cols is None:  # trained on arrays: every column but the id and target, in order
            cols = [i for i in range(len(header)) if i not in (id_at, y_at)]
        cells = np.array(chunk, dtype=object)
        x = parse_features(cells[:, cols], path, lines, [header[i] for i in cols])
        ids = list(cells[:, id_at]) if id_at is not None else list(range(done, done + len(chunk)))
        y = list(cells[:, y_at]) if y_at is not None else None
        done += len(chunk)
        yield (header[id_at] if id_at is not None else "row"), ids, x, y


def _jsonl_chunks(trained, path: Path, rows: int, id_column: str | None, labelled: bool) -> Iterator[tuple]:
    """Lines {"id": ..., "x": [...], "y": ...} (the stream format) or {column: value, ..., target: ...}."""

    from cadence.errors import DataError

    id_key = id_column or "id"
    y_key = trained.target or "y"
    batch: list[tuple] = []
    row = 0
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"JSONL file {path} does not exist.") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise DataError(f"{path} line {number} is not JSON: {err}.") from None
            if not isinstance(obj, dict):
                raise DataError(f'{path} line {number} must be a JSON object, e.g. {{"id": 1, "x": [...]}}.')
            if "x" in obj:
                x = obj["x"]
            else:
                keys = list(obj)
                cols = trained.columns(keys)
                if cols is None:
                    raise DataError(f'{path} line {number} has no "x" and this model has no column names.')
                x = [obj[keys[i]] for i in cols]
            label = obj.get(y_key, obj.get("y"))
            if labelled and label is None:
                raise DataError(f"{path} line {number} has no label ({y_key!r}).")
            batch.append((obj.get(id_key, row), x, label))
            row += 1
            if len(batch) == rows:
                yield _jsonl_chunk(batch, id_key)
                batch = []
    if batch:
        yield _jsonl_chunk(batch, id_key)


def _jsonl_chunk(batch: list[tuple], id_key: str) -> tuple:
    import numpy as np

    return id_key, [b[0] for b in batch], np.asarray([b[1] for b in batch]), [b[2] for b in batch]


def _image_chunks(trained, folder: Path, rows: int, labelled: bool) -> Iterator[tuple]:
    from cadence.data.files import images_in, read_images
    from cadence.errors import DataError

    if trained.image is None:
        raise DataError(f"{folder} is a folder of images, but this model was trained on tabular features.")
    loose = images_in(folder)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if labelled and loose:
        raise DataError(
            f"{folder} holds {len(loose)} images outside class subfolders; evaluating needs each image in the "
            f"folder of its class, e.g. {folder}/cat/1.png."
        )
    files = loose + [f for d in subfolders for f in images_in(d)]
    if not files:
        raise DataError(f"no images in {folder} or its subfolders.")
    for start in range(0, len(files), rows):
        part = files[start : start + rows]
        labels = [f.parent.name for f in part] if labelled else None
        image = trained.image
        x = read_images(part, tuple(image["size"]), image["channels"], image["divide_by"])
        yield "file", [str(f.relative_to(folder)) for f in part], x, labels
