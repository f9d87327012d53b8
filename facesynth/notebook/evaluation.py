"""An evaluation result as a table in a notebook: metric, value, definition (and the JSON beside it)."""
from __future__ import annotations

import html
import os

__all__ = ["show_evaluation", "evaluation_html"]


def evaluation_html(result: dict, keys: list[str], title: str) -> str:
    """HTML table of ``result``'s ``keys``: value and the metric's definition (from ``result["definitions"]``)."""
    from facesynth.evaluate.report import format_value

    definitions = result.get("definitions", {})
    rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td style='text-align:right'>{html.escape(format_value(result[k]))}"
                   f"</td><td style='text-align:left'>{html.escape(definitions.get(k, ''))}</td></tr>"
                   for k in keys if k in result)
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in result.get("notes", []))
    return (f"<table class='facesynth-evaluation'><caption style='text-align:left'><b>{html.escape(title)}</b></caption>"
            f"<tr><th>metric</th><th>value</th><th style='text-align:left'>definition</th></tr>{rows}</table>"
            + (f"<ul>{notes}</ul>" if notes else ""))


def show_evaluation(result: dict, kind: str, title: str, path: str | os.PathLike | None = None) -> str:
    """Display an evaluation table (HTML, plus the plain text table for logs) and write the JSON to ``path``.

    ``kind``: ``"swap"``, ``"reenact"``, ``"lipsync"`` or ``"generate"`` picks the rows (``SUMMARY_KEYS``), those that
    ``facesynth evaluate`` prints. Returns the HTML.
    """
    from IPython.display import HTML, display

    from facesynth.evaluate.report import SUMMARY_KEYS, format_table, write_report

    keys = SUMMARY_KEYS[kind]
    page = evaluation_html(result, keys, title)
    display(HTML(page))
    print(format_table(result, keys, title=title))
    for note in result.get("notes", []):
        print(f"note: {note}")
    if path is not None:
        print(f"→ {write_report(result, path)}")
    return page
