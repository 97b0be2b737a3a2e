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


def read_numeric_table(path: str | os.PathLike) -> tuple[list[str] | None, np.ndarray]:
    """Read a numeric table, returning (header names or None, float64 array of shape (rows, columns)).

    The delimiter is `;` when the first non-empty line contains one (UCI's wine originals), else `,`.
    That line is a header when any of its fields is not a number; names are stripped of quotes and spaces.
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
    return (fields if has_header else None), values
