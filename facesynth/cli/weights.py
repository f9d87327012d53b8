"""``facesynth weights``: the official weights, where they come from and where they go."""
from __future__ import annotations


def _add_weights(sub) -> None:
    sub.add_parser("weights", help="list the official weights, where they come from, and which are present")


def _run_weights(args) -> int:
    from facesynth import weights

    for spec in weights.REGISTRY.values():
        found = weights.find(spec.name)
        state = f"present: {found}" if found else f"missing → {spec.urls[0]}"
        print(f"{spec.name:18s} {spec.filename:42s} {spec.licence:40s} {state}")
    return 0


COMMANDS = {"weights": (_add_weights, _run_weights)}
