"""sapctl's offline commands on inputs a user gets wrong: a directory gives a Python
traceback (IsADirectoryError) instead of one line naming the file; a character device
or a huge file is read whole, unbounded (validate /dev/zero never ends and grows until
memory runs out; run here under a 1 GB address-space limit and a timeout)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import script


def _sapctl(*args: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["prlimit", "--as=1073741824", script("sapctl"),
                               "--socket", "/nonexistent/sapd.sock", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("args", [["validate"], ["decode"], ["decode", "--pcap"], ["announce"]],
                         ids=["validate", "decode", "decode-pcap", "announce"])
def test_a_directory_is_one_line_naming_it_not_a_traceback(tmp_path: Path,
                                                           args: list[str]) -> None:
    result = _sapctl(*args, str(tmp_path))
    assert result is not None
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(tmp_path) in result.stderr


def test_validate_of_an_endless_file_stops_with_a_size_error() -> None:
    result = _sapctl("validate", "/dev/zero")
    assert result is not None, "sapctl validate /dev/zero did not end within 5 s"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
