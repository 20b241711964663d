"""The Provenance section (``provenance``): which edgeq wrote the report, with which settings, from which files."""

from __future__ import annotations

import json

from edgeq.report.content import Page
from edgeq.report.format import esc, fmt, name_cell, table


def render_provenance(page: Page) -> str:
    origin = page.provenance
    if origin is None:
        return ""
    facts = [["edgeq version", esc(origin.edgeq_version)],
             ["report schema", f"edgeq.report version {fmt(origin.schema_version, 'd')}"],
             ["command", f"<code>edgeq {esc(origin.command)}</code>"]]
    parts = [table(None, facts)]
    if origin.inputs:
        cells = [[esc(i.role), name_cell(i.source, 40), name_cell(i.path or "—", 48),
                  f'<span class="name">{esc(i.sha256)}</span>' if i.sha256 else
                  '<span class="muted">no file (generated in memory)</span>', fmt(i.bytes, "d")]
                 for i in origin.inputs]
        parts.append("<h3>Inputs</h3>")
        parts.append(table(["Input", "Source", "File hashed", "sha256", "Bytes"], cells, numeric={4}))
    what = "The recipe" if origin.command == "build" else "The command's settings"
    settings = json.dumps(origin.settings, indent=1, sort_keys=True)
    parts.append(f"<details><summary>{what}</summary>\n<pre>{esc(settings)}</pre>\n</details>")
    return "\n".join(parts)
