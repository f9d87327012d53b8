"""Face reenactment with the First Order Motion Model: official-checkpoint compatible modules and loading."""
from facesynth.reenact.animate import animate, find_best_frame, iter_animate, normalize_kp
from facesynth.reenact.checkpoint import FOMM, check_state_dict, load_fomm
from facesynth.reenact.config import BUILTIN_CONFIGS, FOMMConfig
from facesynth.reenact.evaluate import evaluate_reconstruction
from facesynth.reenact.pipeline import Reenactment, reenact, self_reenact
from facesynth.reenact.model import (DenseMotionNetwork, KPDetector, MultiScaleDiscriminator, OcclusionAwareGenerator,
                                     build_discriminator, build_generator, build_kp_detector)
from facesynth.reenact.train import FOMMTrainConfig, FOMMTrainer, still_as_video

__all__ = ["load_fomm", "animate", "iter_animate", "normalize_kp", "find_best_frame", "FOMM", "FOMMConfig",
           "BUILTIN_CONFIGS", "check_state_dict", "KPDetector",
           "DenseMotionNetwork", "OcclusionAwareGenerator", "MultiScaleDiscriminator", "build_kp_detector",
           "build_generator", "build_discriminator", "evaluate_reconstruction", "reenact", "self_reenact", "Reenactment", "FOMMTrainer", "FOMMTrainConfig",
           "still_as_video"]
