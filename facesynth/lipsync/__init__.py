"""Lip sync with Wav2Lip: official-checkpoint compatible networks, audio features and the video pipeline."""
from facesynth.lipsync.audio import (MelWindows, chunk_starts, count_mel_frames, iter_audio, iter_mel, load_audio,
                                     mel_filterbank, mel_windows, melspectrogram, synthetic_speech)
from facesynth.lipsync.checkpoint import (load_official, load_quality_discriminator, load_syncnet, load_wav2lip,
                                          official_checkpoint, random_wav2lip, randomize_)
from facesynth.lipsync.model import QualityDiscriminator, SyncNet, Wav2Lip, fuse_batchnorm
from facesynth.lipsync.pipeline import (InferenceWav2Lip, LipsyncPlan, face_batch, iter_lipsync, lipsync, pad_box,
                                        paste_prediction, plan_lipsync, smooth_boxes, write_lipsync)
from facesynth.lipsync.portrait import portrait_face_box, talking_portrait

__all__ = ["load_wav2lip", "melspectrogram", "lipsync", "talking_portrait", "iter_lipsync", "plan_lipsync",
           "LipsyncPlan", "chunk_starts", "mel_windows", "MelWindows", "iter_mel", "iter_audio", "count_mel_frames",
           "mel_filterbank", "load_audio", "load_syncnet", "load_quality_discriminator", "load_official",
           "official_checkpoint", "random_wav2lip", "randomize_", "Wav2Lip", "SyncNet", "QualityDiscriminator",
           "fuse_batchnorm", "InferenceWav2Lip", "face_batch", "pad_box", "smooth_boxes", "paste_prediction", "synthetic_speech",
           "portrait_face_box", "write_lipsync"]
