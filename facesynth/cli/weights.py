"""``facesynth weights``: the official weights, where they come from, where they go, and what state they are in."""
from __future__ import annotations

import json


def _add_weights(sub) -> None:
    p = sub.add_parser(
        "weights", help="list the official weights, where they go and which are present; --verify checks them",
        description="List the official weights files: where each goes, its licence and whether it is present. "
                    "With --verify, hash and open each file on disk (nothing in it is run) and say whether it is "
                    "verified (SHA-256 matches the published one), unverified (readable, no published hash), "
                    "mismatch (a different SHA-256), unreadable (not the expected format), empty (0 bytes) or "
                    "missing. Exit status: 1 when any present file is empty, unreadable or mismatched, else 0; "
                    "missing files alone are not an error (each technique asks for its files when it runs).")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="registry names or official file names (default: every file)")
    p.add_argument("--verify", action="store_true",
                   help="hash and open each file on disk; exit 1 when a present file is bad (missing is not)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _run_weights(args) -> int:
    from facesynth import weights

    specs = [weights.lookup(n) for n in args.names] if args.names else \
        list(weights.REGISTRY.values())
    if args.verify:
        return _verify(specs, as_json=args.json)
    rows = [_listing(spec) for spec in specs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = f"present: {row['path']}" if row["path"] else "missing"
        print(f"{row['name']:18s} {row['filename']:42s} {state}")
        print(f"{'':18s} goes in  {row['folder']}/")
        print(f"{'':18s} licence  {row['licence']}")
        print(f"{'':18s} source   {row['urls'][0]}{'' if row['direct'] else '  (by hand: the page needs a browser)'}")
        for mirror in row["mirrors"]:
            print(f"{'':18s} mirror   {mirror}  (unofficial, unverified)")
    print(f"Where each file comes from, its licence and known mirrors: {_readme()}. "
          f"`facesynth weights --verify` checks the files on disk.")
    return 0


def _listing(spec) -> dict:
    from facesynth import weights

    found = weights.find(spec.name)
    return {"name": spec.name, "filename": spec.filename, "folder": str(weights.destination(spec.name)),
            "licence": spec.licence, "path": None if found is None else str(found), "urls": list(spec.urls),
            "direct": spec.direct, "mirrors": list(spec.mirrors)}


def _verify(specs, as_json: bool) -> int:
    from facesynth import weights

    statuses = [weights.check(spec.name) for spec in specs]
    bad = [s for s in statuses if not s.ok]
    if as_json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
        return 1 if bad else 0
    for s in statuses:
        where = f"{s.path} ({s.size:,} bytes)" if s.path is not None else s.filename
        print(f"{s.name:18s} {s.state:10s} {where}")
        print(f"{'':18s} {s.reason}")
    counts = ", ".join(f"{sum(s.state == state for s in statuses)} {state}" for state in weights.STATES
                       if any(s.state == state for s in statuses))
    print(f"{counts}.", end=" ")
    if bad:
        print(f"Bad: {', '.join(s.name for s in bad)}: delete and download again (see {_readme()}).")
    elif any(s.state == "missing" for s in statuses):
        print(f"Missing files are fine until a technique needs them (see {_readme()}).")
    else:
        print("All present files are usable.")
    return 1 if bad else 0


def _readme() -> str:
    from facesynth.fileio import project_dir

    readme = project_dir() / "weights" / "README.md"
    return str(readme) if readme.is_file() else "weights/README.md in the facesynth repository"


COMMANDS = {"weights": (_add_weights, _run_weights)}
