"""One HTML page with every figure and table of a run, its settings, versions and date, and links to the
executed notebooks (``build/index.html`` of ``make figures``)."""
from __future__ import annotations

import csv
import datetime
import html
import io
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from facesynth.fileio import atomic_write_bytes

__all__ = ["write_index", "versions"]


def versions() -> dict[str, str]:
    """Versions of Python, facesynth and the libraries that shape the numbers, and the machine."""
    import torch

    from facesynth import __version__

    found = {"python": sys.version.split()[0], "facesynth": __version__, "torch": torch.__version__,
             "platform": platform.platform(), "cpu_count": str(os.cpu_count()),
             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    for name in ("numpy", "dlib", "face_alignment", "papermill"):
        try:
            module = __import__(name)
            found[name] = str(getattr(module, "__version__", getattr(module, "DLIB_VERSION", "?")))
        except ImportError:
            continue
    return found


def _table_html(csv_path: Path) -> str:
    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(cell: str) -> str:
    try:
        value = float(cell)
    except ValueError:
        return cell or "n/a"
    return f"{value:.4f}" if abs(value) < 10 and not cell.isdigit() else cell


def _notes(md_path: Path) -> str:
    """The Markdown table's title and notes (lines outside the table) as paragraphs."""
    lines = [ln for ln in md_path.read_text().splitlines() if ln.strip() and not ln.startswith("|")]
    return "".join(f"<h3>{html.escape(ln[4:])}</h3>" if ln.startswith("### ") else f"<p>{html.escape(ln)}</p>"
                   for ln in lines)


def write_index(path: str | os.PathLike, figures: str | os.PathLike, notebooks: Sequence[str | os.PathLike] = (),
                settings: Mapping[str, Any] | None = None, title: str = "facesynth: the study's figures") -> Path:
    """Write an HTML page showing every ``fig*.png`` and table (``table*.csv`` + notes) in ``figures``.

    Links are relative to the page, so the folder can be moved or served as it is.

    Args:
        path: the page to write (e.g. ``build/index.html``).
        figures: the folder ``paper_figures`` wrote.
        notebooks: executed notebooks rendered to HTML, linked from the page.
        settings: the run's settings (QUICK or full, iterations…), shown with the versions and the date.
    Returns:
        The page's path.
    """
    path, figures = Path(path), Path(figures)
    base = path.parent
    summary_file = figures / "figures.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    settings = dict(settings or {}) | {"figures": summary.get("settings", {})}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Generated {stamp}. Every figure below is also in {html.escape(str(figures))} as PDF.</p>"]
    if notebooks:
        links = "".join(f'<li><a href="{html.escape(os.path.relpath(n, base))}">{html.escape(Path(n).stem)}</a></li>'
                        for n in notebooks)
        parts.append(f"<h2>Executed notebooks</h2><ul>{links}</ul>")
    parts.append("<h2>Figures</h2>")
    for png in sorted(figures.glob("fig*.png")):
        rel = html.escape(os.path.relpath(png, base))
        pdf = png.with_suffix(".pdf")
        pdf_link = f' (<a href="{html.escape(os.path.relpath(pdf, base))}">PDF</a>)' if pdf.is_file() else ""
        parts.append(f'<figure><img src="{rel}" alt="{png.stem}"><figcaption>{png.stem}{pdf_link}</figcaption>'
                     f'</figure>')
    parts.append("<h2>Tables</h2>")
    for table in sorted(figures.glob("table*.csv")):
        md = table.with_suffix(".md")
        parts.append(f'<section class="table" id="{table.stem}">{_notes(md) if md.is_file() else ""}'
                     f'{_table_html(table)}<p><a href="{html.escape(os.path.relpath(table, base))}">CSV</a></p>'
                     f'</section>')
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in versions().items())
    parts.append(f"<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>"
                 f"<h2>Versions</h2><table>{rows}</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_bytes(path, page.encode())
