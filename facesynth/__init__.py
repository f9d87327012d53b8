"""facesynth: face extraction, autoencoder face swap, FOMM reenactment, Wav2Lip lip sync and StyleGAN."""
from facesynth.errors import (CheckpointError, ConfigError, FacesynthError, MediaError, NoFaceError,
                              UnsafeCheckpointError, WeightsNotFoundError)

__version__ = "0.1.0"
__all__ = ["FacesynthError", "MediaError", "NoFaceError", "CheckpointError", "UnsafeCheckpointError",
           "WeightsNotFoundError", "ConfigError", "__version__"]
