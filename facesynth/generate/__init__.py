"""Face generation with StyleGAN v1: the official pickles read without TensorFlow, sampling tools, training."""
from facesynth.generate.checkpoint import load_stylegan, save_stylegan
from facesynth.generate.config import StyleGANConfig
from facesynth.generate.model import NOISE_MODES, Discriminator, MappingNetwork, StyleGAN, SynthesisNetwork
from facesynth.generate.train import StyleGANTrainConfig, StyleGANTrainer

__all__ = ["load_stylegan", "save_stylegan", "StyleGAN", "StyleGANConfig", "MappingNetwork", "SynthesisNetwork",
           "Discriminator", "NOISE_MODES", "StyleGANTrainer", "StyleGANTrainConfig"]
