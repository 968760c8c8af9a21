"""Griffe extension for the API reference: doctest examples in docstrings shown as code.

The package's docstrings carry `>>>` examples in free text (they run under `--doctest-modules`).
Rendered as Markdown, `[0]["key"]` in such a line reads as a link and breaks the strict build;
this fences every unindented run of `>>>` lines (with their `...` continuations and output) as
a `pycon` block before mkdocstrings renders it. Examples inside an indented `Examples:` section
are griffe's own business and left alone.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """`text` with each unindented doctest run wrapped in a pycon fence.

    >>> fence_doctests("Sum.\\n\\n>>> 1 + 1\\n2\\n")
    'Sum.\\n\\n```pycon\\n>>> 1 + 1\\n2\\n```\\n'
    """
    out: list[str] = []
    in_fence = in_doctest = False
    for line in text.split("\n"):
        if in_doctest and not line.strip():
            out.append("```")
            in_doctest = False
        elif line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and not in_doctest and line.startswith(">>>"):
            out.append("```pycon")
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest examples of every object's docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
