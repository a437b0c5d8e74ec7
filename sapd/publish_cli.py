"""sapctl announce/update/withdraw (filled in with the announce feature)."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any, with_errors: Any, client: Any, print_json: Any) -> None:
    del sub, with_errors, client, print_json
