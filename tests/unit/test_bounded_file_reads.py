"""sapd.plumbing.files: only regular files are read, never blocking, never unbounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sapd.plumbing.files import InputFileError, read_regular_file


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "trap.sdp"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="is a FIFO"):
        read_regular_file(fifo, 100)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.sdp"
    big.write_bytes(b"x" * 101)
    with pytest.raises(InputFileError, match="larger than 100 bytes"):
        read_regular_file(big, 100)
    big.write_bytes(b"x" * 100)
    assert read_regular_file(big, 100) == b"x" * 100


def test_a_character_device_and_a_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="/dev/zero: is a character device"):
        read_regular_file("/dev/zero", 100)
    with pytest.raises(InputFileError, match="is a directory"):
        read_regular_file(tmp_path, 100)
    with pytest.raises(InputFileError, match="no such file"):
        read_regular_file(tmp_path / "missing", 100)
