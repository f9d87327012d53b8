"""``facesynth figures``: the study's figures and tables from the notebooks' results (running what is missing)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["add_figures", "run_figures"]


def add_figures(sub) -> None:
    p = sub.add_parser("figures", help="the study's figures (PNG/PDF) and tables (Markdown/CSV), and an HTML page",
                       description="Read what notebooks 01-03 wrote under WORK (nb01, nb02, nb03: logs, videos, "
                                   "face sets, evaluation JSON), run a missing notebook under papermill, run the "
                                   "pruning experiment, and write every figure and table to OUT with an index.html.")
    p.add_argument("--out", required=True, help="folder for the figures, tables and index.html")
    p.add_argument("--work", default="work", help="folder holding the notebooks' OUT folders nb01, nb02, nb03 "
                                                  "(default work, the notebooks' default)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="run missing notebooks and the pruning experiment at QUICK (CPU) size (the default)")
    mode.add_argument("--full", dest="quick", action="store_false",
                      help="the full settings (a GPU and the released weights)")
    p.add_argument("--no-run", dest="run_missing", action="store_false",
                   help="fail instead of running a notebook whose results are missing")
    p.add_argument("--no-pruning", action="store_true", help="leave the pruning experiment (table3) out")
    p.add_argument("--detector", default="auto", help="fan, dlib or auto (default)")


def run_figures(args) -> int:
    from facesynth.figures import paper_figures, write_index

    out = Path(args.out)
    summary = paper_figures(args.work, out, quick=args.quick, run_missing=args.run_missing,
                            pruning={"skip": True} if args.no_pruning else None, detector=args.detector)
    for name, paths in summary["files"].items():
        print(f"{name:18s} " + "  ".join(Path(p).name for p in paths))
    if summary["settings"].get("pruning_verdict"):
        print(summary["settings"]["pruning_verdict"])
    print(f"→ {write_index(out / 'index.html', out, settings={'mode': 'QUICK' if args.quick else 'full'})}")
    return 0


COMMANDS = {"figures": (add_figures, run_figures)}
