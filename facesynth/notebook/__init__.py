"""Notebook helpers: galleries, live loss/LR plots, the pruning widget. No maths here; the library does the work."""
from facesynth.notebook.gallery import face_gallery
from facesynth.notebook.live import LivePlot, plot_training
from facesynth.notebook.prune_widget import PruneWidget

__all__ = ["face_gallery", "LivePlot", "plot_training", "PruneWidget"]
