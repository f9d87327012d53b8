"""Derive facesynth's canonical 68-point face template from the real sample faces.

Run once (``python scripts/make_face_template.py``); it prints the array stored in
``facesynth/extract/template.py``. Method: dlib's 68 landmarks on every frame of the sample talking head
and on the two sample portraits; generalised Procrustes alignment (similarity, no reflection) to their mean,
each identity weighted equally; the mean made left-right symmetric with the iBUG mirror permutation; then
scaled so the inner-face points (17-67: brows, nose, eyes, mouth) span [0,1] on their longer side, centred.
"""
import numpy as np

from facesynth.extract.align import MIRROR_68, umeyama
from facesynth.extract.backends.dlib_backend import DlibBackend
from facesynth.media import iter_frames, read_image
from facesynth.samples import ensure_samples


def largest(faces):
    return max(faces, key=lambda f: f.area).landmarks if faces else None


def symmetrize(x: np.ndarray) -> np.ndarray:
    """Rotate a shape so its axis of symmetry is vertical, then average it with its mirror image.

    If x = R(t)·s with s symmetric about the vertical, its mirror is R(-t)·s, so the rotation taking the
    mirror onto x is R(2t): undo half of it.
    """
    flip = np.array([-1.0, 1.0])
    x = x - x.mean(0)
    m = umeyama(x[MIRROR_68] * flip, x, estimate_scale=False)
    half = -np.arctan2(m[1, 0], m[0, 0]) / 2
    rot = np.array([[np.cos(half), -np.sin(half)], [np.sin(half), np.cos(half)]])
    s = x @ rot.T
    return (s + s[MIRROR_68] * flip) / 2


def main() -> None:
    s = ensure_samples()
    det = DlibBackend()
    video = [largest(det.detect([f])[0]) for _, f in iter_frames(s.talking_head)]
    groups = [np.stack([v for v in video if v is not None])]
    for p in (s.astronaut, s.grace_hopper):
        groups.append(largest(det.detect([read_image(p)])[0])[None])
    mean = groups[1][0].astype(np.float64)
    for _ in range(10):
        aligned = []
        for g in groups:
            per = [(umeyama(pts, mean)[:, :2] @ pts.T).T + umeyama(pts, mean)[:, 2] for pts in g]
            aligned.append(np.mean(per, axis=0))
        mean = symmetrize(np.mean(aligned, axis=0))
    inner = mean[17:]
    lo, hi = inner.min(0), inner.max(0)
    t = (mean - (lo + hi) / 2) / (hi - lo).max() + 0.5
    np.set_printoptions(precision=4, suppress=True)
    print(repr(np.round(t, 4)))


if __name__ == "__main__":
    main()
