"""Reading numeric delimited text files whose delimiter (`;` or `,`) and header line are detected."""
from __future__ import annotations

import os
import pathlib

import numpy as np


def _first_line(path: pathlib.Path) -> str:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    raise ValueError(f"{path} is empty; expected a numeric table")


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _data_line_numbers(path: pathlib.Path, has_header: bool) -> list[int]:
    """The 1-based file line of each data row, as np.loadtxt counts rows (blank and comment lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        numbers = [n for n, line in enumerate(handle, start=1) if line.split("#")[0].strip()]
    return numbers[1:] if has_header else numbers


def _check_finite(path: pathlib.Path, header: list[str] | None, values: np.ndarray) -> None:
    """Raises ValueError naming the file, line, data row and column of the first NaN or infinity."""
    bad_rows, bad_columns = np.nonzero(~np.isfinite(values))
    if not len(bad_rows):
        return
    row, column = int(bad_rows[0]), int(bad_columns[0])
    line = _data_line_numbers(path, header is not None)[row]
    name = f" ({header[column]!r})" if header is not None else ""
    raise ValueError(
        f"{path}: non-finite value {values[row, column]} at line {line} (data row {row + 1}), column {column + 1}{name}; "
        f"{len(bad_rows)} non-finite value(s) in all. Every value of a numeric table must be a finite number"
    )


def read_numeric_table(path: str | os.PathLike) -> tuple[list[str] | None, np.ndarray]:
    """Read a numeric table, returning (header names or None, float64 array of shape (rows, columns)).

    The delimiter is `;` when the first non-empty line contains one (UCI's wine originals), else `,`.
    That line is a header when any of its fields is not a number; names are stripped of quotes and spaces.
    A NaN or infinite value is an error naming the file, line and column.
    """
    path = pathlib.Path(path)
    first = _first_line(path)
    delimiter = ";" if ";" in first else ","
    fields = [field.strip().strip('"').strip("'").strip() for field in first.split(delimiter)]
    has_header = not all(_is_number(field) for field in fields)
    try:
        values = np.loadtxt(path, delimiter=delimiter, skiprows=1 if has_header else 0, ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: not a numeric {delimiter!r}-separated table ({error})") from error
    header = fields if has_header else None
    _check_finite(path, header, values)
    return header, values
