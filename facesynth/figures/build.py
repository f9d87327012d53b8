"""``make figures``: run every notebook under papermill, render each to HTML, and write ``build/index.html``.

    python -m facesynth.figures.build --out build           # QUICK (CPU minutes)
    python -m facesynth.figures.build --out build --full    # the full settings (a GPU and the released weights)

The notebooks write into ``<out>/work/nbXX``; notebook 04 reads those folders and writes the figures and tables
into ``<out>/figures``; the executed notebooks land in ``<out>/notebooks`` as .ipynb and .html.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from facesynth.errors import FacesynthError

__all__ = ["build", "main"]

ORDER = ("00_extract_faces", "01_face_swap", "02_face_reenactment", "03_face_generation", "04_paper_figures")


def _to_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def build(out: str | os.PathLike = "build", full: bool = False, notebooks: str | os.PathLike | None = None,
          detector: str = "auto", only: Sequence[str] = ORDER, work: str | os.PathLike | None = None,
          parameters: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Run the notebooks in order (QUICK unless ``full``), render them to HTML, and write ``<out>/index.html``.

    Args:
        out: the build folder: ``figures/``, ``notebooks/`` (executed .ipynb and .html), ``index.html``.
        full: the notebooks' full settings (QUICK = False).
        notebooks: the notebooks folder (default: the repository's).
        detector: every notebook's DETECTOR.
        only: the notebooks to run, in order (default all five); notebook 04 runs the others' missing parts.
        work: the folder for notebooks 01-03's OUT folders (default ``<out>/work``).
        parameters: extra papermill parameters per notebook name.
    """
    from facesynth.figures.paper import find_notebooks, run_notebook
    from facesynth.figures.report import write_index

    out = Path(out).resolve()
    folder = find_notebooks(notebooks)
    work = Path(work).resolve() if work else out / "work"
    figures, executed_dir = out / "figures", out / "notebooks"
    pages, timings = [], {}
    for name in only:
        key = f"nb{name[:2]}"
        params = {"QUICK": not full, "DETECTOR": detector}
        if name.startswith("04"):
            params |= {"WORK": str(work), "OUT": str(figures)}
        else:
            params["OUT"] = str(work / key)
        params |= dict((parameters or {}).get(name, {}))
        start = time.monotonic()
        print(f"[figures] running {name} ({'full' if full else 'QUICK'})", flush=True)
        executed = run_notebook(name, Path(params["OUT"]), params, folder,
                                executed=executed_dir / f"{name}.ipynb")
        timings[name] = round((time.monotonic() - start) / 60, 1)
        pages.append(_to_html(executed))
    settings = {"mode": "full" if full else "QUICK", "detector": detector, "minutes per notebook": timings,
                "parameters": {k: dict(v) for k, v in (parameters or {}).items()}}
    index = write_index(out / "index.html", figures, pages, settings)
    print(f"[figures] {index}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facesynth.figures.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build", help="output folder (default build)")
    parser.add_argument("--full", action="store_true", help="the notebooks' full settings (QUICK = False)")
    parser.add_argument("--detector", default="auto", help="fan, dlib or auto (default)")
    args = parser.parse_args(argv)
    try:
        build(args.out, full=args.full, detector=args.detector)
    except FacesynthError as e:
        print(f"facesynth: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
