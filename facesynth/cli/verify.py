"""``facesynth verify``: check a result's C2PA manifest, hash chain and watermark, and say what was changed."""
from __future__ import annotations

import json


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check that an image or video facesynth wrote is unchanged",
                       description="Check the file's C2PA signature and hard binding, compare its content with the "
                                   "per-segment hash chain (signed manifest, else the sidecar FILE.provenance.json), "
                                   "and read the invisible watermark. Names the segments (frames, seconds) whose "
                                   "content changed and tells a re-encode (same content) from an edit.",
                       epilog="exit status: 0 intact; 1 changed, re-encoded, or manifest missing/invalid; 2 bad input "
                              "(missing, truncated, not written by facesynth, a sidecar of another file). Manifests "
                              "signed with facesynth's self-issued local certificate verify but show an untrusted "
                              "signer; set FACESYNTH_C2PA_CERT/FACESYNTH_C2PA_KEY to sign with your own.")
    p.add_argument("file", help="image (PNG, JPEG) or MP4 video")
    p.add_argument("--sidecar", default=None,
                   help="the .provenance.json to compare with (default: FILE.provenance.json when present), e.g. "
                        "the original's when checking a re-encoded copy")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")


def _run_verify(args) -> int:
    from facesynth.provenance import verify

    report = verify(args.file, sidecar=args.sidecar)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return report.exit_code


COMMANDS = {"verify": (_add_verify, _run_verify)}
