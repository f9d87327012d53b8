"""Record a short driving video from the browser's webcam in Google Colab (the study drove portraits live)."""
from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from facesynth.errors import MediaError
from facesynth.fileio import atomic_write_bytes

__all__ = ["in_colab", "record_webcam"]

# Runs in the browser: ask for the camera, record `seconds` with MediaRecorder, hand back a data URL.
_RECORD_JS = """
async function recordWebcam(seconds) {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.ondataavailable = e => chunks.push(e.data);
  const stopped = new Promise(resolve => recorder.onstop = resolve);
  recorder.start();
  await new Promise(resolve => setTimeout(resolve, seconds * 1000));
  recorder.stop();
  await stopped;
  stream.getTracks().forEach(t => t.stop());
  const blob = new Blob(chunks, {type: recorder.mimeType});
  return await new Promise(resolve => {
    const reader = new FileReader();
    reader.onloadend = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
}
"""


def in_colab() -> bool:
    """True inside a Google Colab kernel (where the browser's camera can be reached)."""
    return "google.colab" in sys.modules


def record_webcam(path: str | os.PathLike, seconds: float = 5.0) -> Path:
    """Record ``seconds`` of webcam video (with sound) in the Colab browser tab and save it to ``path`` (WebM).

    Raises:
        MediaError: not running in Colab, or the browser gave no video (camera refused or missing).
    """
    if not in_colab():
        raise MediaError("webcam capture runs in Google Colab's browser tab; elsewhere record a video with any "
                         "camera app and pass its file as the driving video")
    from google.colab.output import eval_js  # type: ignore[import-not-found]
    from IPython.display import Javascript, display

    display(Javascript(_RECORD_JS))
    data_url = eval_js(f"recordWebcam({float(seconds)})")
    if not isinstance(data_url, str) or "," not in data_url:
        raise MediaError("the browser returned no recording; allow camera access and run the cell again")
    payload = base64.b64decode(data_url.split(",", 1)[1])
    if not payload:
        raise MediaError("the recording is empty; allow camera access and run the cell again")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, payload)
    return out
