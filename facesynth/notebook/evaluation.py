"""An evaluation result as a table in a notebook: metric, value, definition (and the JSON beside it)."""
from __future__ import annotations

import html
import os

__all__ = ["show_evaluation", "evaluation_html", "show_comparison", "comparison_html"]


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


def comparison_html(results: dict[str, dict], keys: list[str], title: str) -> str:
    """HTML table with one value column per result (``{label: result}``) and the definitions of the first."""
    from facesynth.evaluate.report import format_value

    first = next(iter(results.values()))
    definitions = first.get("definitions", {})
    keys = [k for k in keys if any(k in r and not isinstance(r[k], (dict, list, str)) for r in results.values())]
    head = "".join(f"<th>{html.escape(label)}</th>" for label in results)
    rows = "".join(
        f"<tr><td><code>{html.escape(k)}</code></td>"
        + "".join(f"<td style='text-align:right'>{html.escape(format_value(r.get(k)))}</td>" for r in results.values())
        + f"<td style='text-align:left'>{html.escape(definitions.get(k, ''))}</td></tr>" for k in keys)
    return (f"<table class='facesynth-evaluation'><caption style='text-align:left'><b>{html.escape(title)}</b></caption>"
            f"<tr><th>metric</th>{head}<th style='text-align:left'>definition</th></tr>{rows}</table>")


def show_comparison(results: dict[str, dict], kind: str, title: str, path: str | os.PathLike | None = None) -> str:
    """Display several evaluations side by side (``{label: result}``, e.g. a model and a baseline) as one table,
    plus the plain text table; ``path`` gets ``{label: result}`` as JSON. Returns the HTML."""
    from IPython.display import HTML, display

    from facesynth.evaluate.report import SUMMARY_KEYS, format_comparison, write_report

    keys = SUMMARY_KEYS[kind]
    page = comparison_html(results, keys, title)
    display(HTML(page))
    print(format_comparison(results, keys, title=title))
    if path is not None:
        print(f"→ {write_report(results, path)}")
    return page
