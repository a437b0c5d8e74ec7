"""The shell steps a README gives, so a test can run them as written."""

from __future__ import annotations

import textwrap


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section, up to the next ``## `` heading."""
    heading = f"## {title}\n"
    if heading not in text:
        raise AssertionError(f"README has no section {title!r}")
    body = text.split(heading, 1)[1]
    return body.split("\n## ", 1)[0]


def code_block_after(text: str, title: str, lead: str) -> str:
    """The first indented code block in section ``title`` after the paragraph that starts
    with ``lead``, dedented."""
    body = section(text, title)
    paragraphs = body.split("\n\n")
    for index, paragraph in enumerate(paragraphs):
        if paragraph.lstrip("\n").startswith(lead):
            block = []
            for following in paragraphs[index + 1:]:
                if not following.startswith("    "):
                    break
                block.append(following)
            if block:
                return textwrap.dedent("\n\n".join(block)).strip() + "\n"
    raise AssertionError(f"README section {title!r}: no code block after {lead!r}")
