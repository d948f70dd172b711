"""The data the report's templates render: table cells, column heads, tables and inline figures. A module of its
own so that the modules building a page's parts (html.py, analyses_view.py) share it without importing each
other."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Figure", "TCell", "THead", "Table"]


@dataclass
class TCell:
    """One table cell: its text, the value it sorts by (None: n/a, always last), bold, links."""

    text: str
    sort: float | str | None = None
    best: bool = False
    links: list[tuple[str, str, str]] = field(default_factory=list)  # (text, href, aria-label or "")


@dataclass
class THead:
    label: str
    key: str  # names the column in a #sort=TABLE:KEY,DIR fragment
    numeric: bool = True


@dataclass
class Table:
    id: str
    caption: str
    heads: list[THead]
    rows: list[list[TCell]]  # the first cell of a row is its header (<th scope="row">)


@dataclass
class Figure:
    svg: str  # the SVG element, ready to inline
    caption: str
