"""The study's figures and tables, regenerated from what the notebooks wrote (see ``paper.py``), its pruning
finding as an experiment (``pruning.py``), and the HTML page of a ``make figures`` run (``report.py``).

Example:
    >>> from facesynth.figures import paper_figures
    >>> paper_figures(work="work", out="work/figures", quick=True)      # doctest: +SKIP
"""
from facesynth.figures.paper import (STUDY_TABLE1, STUDY_TABLE2, fig_fomm_loss, fig_generated, fig_loss, fig_lr,
                                     fig_portraits, fig_swap, find_notebooks, loss_windows, paper_figures,
                                     read_results, run_notebook, save_figure, save_results, table_fomm,
                                     table_swap_loss, write_table)
from facesynth.figures.pruning import PruningResult, plot_pruning, pruning_experiment, write_pruning_table
from facesynth.figures.report import versions, write_index

__all__ = ["STUDY_TABLE1", "STUDY_TABLE2", "fig_fomm_loss", "fig_generated", "fig_loss", "fig_lr", "fig_portraits",
           "fig_swap", "find_notebooks", "loss_windows", "paper_figures", "read_results", "run_notebook",
           "save_figure", "save_results", "table_fomm", "table_swap_loss", "write_table", "PruningResult",
           "plot_pruning", "pruning_experiment", "write_pruning_table", "versions", "write_index"]
