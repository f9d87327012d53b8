"""Notebook helpers: galleries, live loss/LR plots, the pruning widget, webcam capture in Colab. No maths here;
the library does the work."""
from facesynth.notebook.evaluation import show_comparison, show_evaluation
from facesynth.notebook.gallery import (before_after, draw_keypoints, face_gallery, frame_rows, lipsync_preview,
                                       swap_preview)
from facesynth.notebook.live import LivePlot, plot_training
from facesynth.notebook.prune_widget import PruneWidget
from facesynth.notebook.webcam import in_colab, record_webcam

__all__ = ["face_gallery", "frame_rows", "LivePlot", "plot_training", "PruneWidget", "in_colab", "record_webcam",
           "show_evaluation", "swap_preview", "before_after", "draw_keypoints", "lipsync_preview",
           "show_comparison"]
