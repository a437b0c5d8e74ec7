"""Hostile tests: each file reproduces one defect found by attacking the running daemons.
They are expected to fail on the code they were written against (xfail strict), so a
fix turns them into a plain failure that says "remove the xfail"."""

from tests.integration.conftest import sapd, sapd_factory

__all__ = ["sapd", "sapd_factory"]
