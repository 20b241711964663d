"""Text for the page: escaping, numbers, intervals, badges and tables.

Every helper returns HTML that is safe to place as is; a number that is missing or not finite (a value
JSON could not hold) is shown as a dash.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection

from edgeq.results.document import Interval

LABEL_CHARS = 28
Real = float | int | None  # None: not measured or not finite


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def text(value: object) -> str:
    return "" if value is None else str(value)


def finite(value: Real) -> float | None:
    """The value as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt(value: Real, spec: str = ".2f", suffix: str = "") -> str:
    number = finite(value)
    if number is None:
        return "—"
    if spec == "d":
        return f"{round(number):d}{suffix}"
    return f"{number:{spec}}{suffix}"


def pct(value: Real, digits: int = 2) -> str:
    """A share in [0, 1] as a percentage."""
    number = finite(value)
    return "—" if number is None else f"{100 * number:.{digits}f}%"


def kib(value: Real) -> str:
    number = finite(value)
    return "—" if number is None else f"{number / 1024:,.1f} KiB"


def interval(pair: Interval | None, scale: float = 100.0, spec: str = ".1f", sep: str = " to ") -> str:
    """'84.6 to 92.5' for a [lo, hi] pair (shares scaled to percent), '' when there is none."""
    if pair is None:
        return ""
    lo, hi = finite(pair[0]), finite(pair[1])
    return "" if lo is None or hi is None else f"{scale * lo:{spec}}{sep}{scale * hi:{spec}}"


def with_interval(shown: str, pair: Interval | None, scale: float = 100.0, spec: str = ".1f") -> str:
    bounds = interval(pair, scale, spec, ", ")  # on its own line: the table stays within the page
    return f'{shown}<br><span class="muted">[{bounds}]</span>' if bounds else shown


def bool_badge(value: bool, yes: str = "PASS", no: str = "FAIL") -> str:
    return f'<span class="badge ok">{yes}</span>' if value else f'<span class="badge bad">{no}</span>'


def short(name: object, limit: int = LABEL_CHARS) -> str:
    """A tensor name short enough for a cell or an axis, keeping what tells tensors apart.

    TFLite joins the names of fused ops with ';': the first is the op's own. A path still too long keeps its
    first segment and as many of its last segments as fit, the middle elided (``model/…/conv_3/BiasAdd``): the
    tail distinguishes layers, the head says which model. A last segment alone too long keeps its tail."""
    whole = text(name)
    first = whole.split(";")[0] or whole
    if len(first) <= limit:
        return first
    segments = first.split("/")
    tail: list[str] = []
    for segment in reversed(segments[1:]):
        if len(segments[0]) + len("/…/") + len("/".join([segment, *tail])) > limit:
            break
        tail.insert(0, segment)
    if tail:
        return f"{segments[0]}/…/{'/'.join(tail)}"
    return "…" + first[-(limit - 1):]


def label(name: object, limit: int = LABEL_CHARS) -> str:
    """Text matplotlib draws literally: no mathtext from '$', no legend entry dropped for a leading '_'."""
    drawn = short(name, limit).replace("$", r"\$")
    return " " + drawn if drawn.startswith("_") else drawn


def table(headers: list[str] | None, rows: list[list[str]], numeric: Collection[int] = (), names: Collection[int] = (),
          row_classes: list[str] | None = None, row_ids: list[str] | None = None) -> str:
    """An HTML table of already-escaped cells; ``numeric`` columns align right, ``names`` columns are identifiers;
    ``row_ids`` give rows an anchor (in-page links to a row)."""

    def cls(i: int) -> str:
        return ' class="num"' if i in numeric else ' class="name"' if i in names else ""

    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers or []))
    body = []
    for r, row in enumerate(rows):
        row_cls = row_classes[r] if row_classes and row_classes[r] else ""
        cells = "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row))
        attrs = (f' id="{esc(row_ids[r])}"' if row_ids else "") + (f' class="{row_cls}"' if row_cls else "")
        body.append(f"<tr{attrs}>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>\n" if head else ""
    return f"<table>\n{thead}<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


NAME_CHARS = 48  # a name cell's text; the whole name is its title (shown on hover)


def name_cell(name: object, limit: int = NAME_CHARS) -> str:
    """A tensor name shortened readably (:func:`short`), the whole name on hover."""
    return f'<span title="{esc(name)}">{esc(short(name, limit))}</span>'


def img(b64: str, alt: str, caption: str = "", css_class: str = "", size: tuple[int, int] | None = None,
        usemap: str = "") -> str:
    attrs = f' class="{css_class}"' if css_class else ""
    if size:
        attrs += f' width="{size[0]}" height="{size[1]}"'
    if usemap:  # an image map's areas are in the PNG's pixels: the image keeps its natural size
        attrs += f' usemap="#{esc(usemap)}" class="mapped"'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img{attrs} alt="{esc(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'
