"""A site name with a line break, a tab or DEL: found by giving ``site`` odd strings.

The loader refused a NUL already, but took every other control character: a site
``"east\nwest"`` was stored in the shared directory, where every other site lists it,
and split every line-based view of it (sapctl's SITE column and ``sapctl sites``, the
logs). The configuration now refuses control characters in ``site``, naming it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sapd.config import load as load_sapd
from sapd.plumbing.config import ConfigError


@pytest.mark.parametrize("site", ["east\\nwest", "tab\\there", "\\u007f"])
def test_site_with_control_characters_is_refused_naming_site(tmp_path: Path,
                                                             site: str) -> None:
    path = tmp_path / "sapd.toml"
    path.write_text(f'site = "{site}"\n')
    with pytest.raises(ConfigError) as refused:
        load_sapd(str(path), {})
    assert refused.value.key == "site" and "control" in str(refused.value)


@pytest.mark.parametrize("site", ["east", "Gebäude 7 / Süd", "x'; DROP TABLE sapd_sites; --"])
def test_ordinary_site_names_still_load(tmp_path: Path, site: str) -> None:
    path = tmp_path / "sapd.toml"
    path.write_text(f'site = "{site}"\n')
    assert load_sapd(str(path), {}).site == site
