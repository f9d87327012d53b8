"""Autoencoder face swap: shared encoder, one decoder per identity; training, pruning, conversion."""
from facesynth.swap.config import PRESETS, SwapConfig
from facesynth.swap.convert import COLOR_TRANSFERS, convert_image, convert_video
from facesynth.swap.model import SwapModel, build_model
from facesynth.swap.prune import prune, rank_faces
from facesynth.swap.train import SwapTrainer, load_swap_model

__all__ = ["SwapConfig", "PRESETS", "SwapModel", "build_model", "SwapTrainer", "load_swap_model", "prune", "rank_faces",
           "convert_video", "convert_image", "COLOR_TRANSFERS"]
