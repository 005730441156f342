"""Tabular files (csv, parquet): column selection, numeric parsing, and row-numbered one-line errors."""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from unified.data.messages import one_line
from unified.data.sources import RawData
from unified.errors import DataError


def load_csv(path: Path, target: Optional[str], features: Optional[list[str]]) -> RawData:
    """Read a CSV file with a header row: the ``features`` columns (all but the target by default) as
    float64 and the ``target`` column (the last by default) as numbers, else stripped strings.

    Raises:
        DataError: naming the file, and the row and column where one is at fault.
    """
    where = str(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror}", path="data.source") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and not any(c.strip() for c in header):
                header = next(reader, None)
            if header is None:
                raise DataError(f"{where}: the file is empty; expected a header row", path="data.source")
            columns = [c.strip() for c in header]
            if all(_is_number(c) for c in columns):
                raise DataError(f"{where}: the first row looks like data ({', '.join(columns[:4])}...); "
                                f"a header row with column names is required", path="data.source")
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            if dupes:
                raise DataError(f"{where}: duplicate column names: {', '.join(dupes)}", path="data.source")
            target, features = select_columns(columns, target, features, where)
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(columns):
                    raise DataError(f"{where}: row {reader.line_num}: expected {len(columns)} cells, "
                                    f"got {len(row)}", path="data.source")
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise DataError(f"{where}: row {reader.line_num}: {one_line(e)}", path="data.source") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not UTF-8 text ({e.reason})", path="data.source") from None
    if not rows:
        raise DataError(f"{where}: no data rows after the header", path="data.source")
    pos = {c: i for i, c in enumerate(columns)}
    cols = list(zip(*rows))
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        x[:, j] = _parse_float_column(list(cols[pos[name]]), name, lines, where, "data.source")
    y = _target_cells(list(cols[pos[target]]), target, lines, where)
    return RawData(x=x, y=y, feature_names=features, where=where)


def load_parquet(path: Path, target: Optional[str], features: Optional[list[str]]) -> RawData:
    """Read a parquet file with pyarrow, selecting columns as :func:`load_csv` does.

    Raises:
        DataError: pyarrow missing (with the install command), an unreadable file, a missing or
            non-numeric value (row and column named).
    """
    where = str(path)
    try:
        import pyarrow.parquet as pq  # lazy, optional
    except ImportError:
        raise DataError(f"{where}: reading parquet needs pyarrow: pip install pyarrow", path="data.source") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error classes
        raise DataError(f"{where}: cannot read as parquet: {one_line(e)}", path="data.source") from None
    columns = [str(c) for c in table.column_names]
    target, features = select_columns(columns, target, features, where)
    x = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        col = table.column(name)
        if col.null_count:
            first = next(i for i, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{where}: column {name!r}, row {first + 1}: missing value", path="data.source")
        values = col.to_numpy(zero_copy_only=False)
        try:
            x[:, j] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            for i, v in enumerate(values.tolist()):
                try:
                    float(v)
                except (TypeError, ValueError):
                    raise DataError(f"{where}: column {name!r}, row {i + 1}: cannot parse {v!r} as a number",
                                    path="data.source") from None
            raise DataError(f"{where}: column {name!r} is not numeric", path="data.source") from None
    tcol = table.column(target)
    if tcol.null_count:
        first = next(i for i, v in enumerate(tcol.to_pylist()) if v is None)
        raise DataError(f"{where}: column {target!r}, row {first + 1}: missing value", path="data.target")
    y = np.asarray(tcol.to_pylist())
    return RawData(x=x, y=y, feature_names=features, where=where)


def select_columns(columns: list[str], target: Optional[str], features: Optional[list[str]], where: str
                   ) -> tuple[str, list[str]]:
    """``(target, features)``: the last column and all others unless named (``data.target``, ``data.features``).

    Raises:
        DataError: fewer than 2 columns, an unknown column (with a did-you-mean), the target among the features.
    """
    if len(columns) < 2:
        raise DataError(f"{where}: needs at least 2 columns (features and a target), found {len(columns)}: "
                        f"{columns}", path="data.source")
    if target is None:
        target = columns[-1]
    elif target not in columns:
        raise DataError(f"{where}: " + _unknown(target, columns, "unknown target column"), path="data.target")
    if features is None:
        features = [c for c in columns if c != target]
    else:
        for f in features:
            if f not in columns:
                raise DataError(f"{where}: " + _unknown(f, columns, "unknown feature column"), path="data.features")
        if target in features:
            raise DataError(f"{where}: the target column {target!r} is also listed as a feature",
                            path="data.features")
        if not features:
            raise DataError(f"{where}: no feature columns selected", path="data.features")
    return target, list(features)


def _unknown(value: str, choices: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what} {value!r}{hint} (available columns: {', '.join(str(c) for c in choices)})"


def _parse_float_column(cells: list[str], col: str, first_line: list[int], where: str, path: str) -> np.ndarray:
    try:
        arr = np.asarray(cells, dtype=str)
        if arr.size and np.any(np.char.str_len(np.char.strip(arr)) == 0):
            raise ValueError("empty")
        return arr.astype(np.float64)
    except ValueError:
        pass
    for value, line in zip(cells, first_line):
        if not value.strip():
            raise DataError(f"{where}: column {col!r}, row {line}: missing value", path=path)
        try:
            float(value)
        except ValueError:
            raise DataError(f"{where}: column {col!r}, row {line}: cannot parse {value!r} as a number",
                            path=path) from None
    raise DataError(f"{where}: column {col!r}: cannot parse as numbers", path=path)  # pragma: no cover


def _target_cells(cells: list[str], col: str, lines: list[int], where: str) -> np.ndarray:
    """Target column: numbers when every cell parses as one, else strings (stripped)."""
    for value, line in zip(cells, lines):
        if not value.strip():
            raise DataError(f"{where}: column {col!r}, row {line}: missing value", path="data.target")
    stripped = [c.strip() for c in cells]
    try:
        return np.asarray(stripped, dtype=str).astype(np.float64)
    except ValueError:
        return np.asarray(stripped, dtype=str)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
