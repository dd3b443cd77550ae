"""pixelvla-bundle: what to do with an engine bundle once it is written (layout: runtime/bundle.py).

    pixelvla-bundle strip BUNDLE              drop the ONNX graph in place: the engine-only bundle a robot carries
    pixelvla-bundle strip BUNDLE --out DIR    write an engine-only copy to DIR; BUNDLE keeps its graph
    pixelvla-bundle verify BUNDLE             every file's size and sha256 against the manifest (after a copy)
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from .bundle import BundleError, strip_to_engine, verify_bundle


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pixelvla-bundle", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    commands = p.add_subparsers(dest="command", required=True)
    strip = commands.add_parser("strip", help="drop the ONNX graph from a bundle that has an engine")
    strip.add_argument("bundle")
    strip.add_argument("--out", help="write the engine-only bundle here instead of stripping BUNDLE in place")
    verify = commands.add_parser("verify", help="check every file's size and sha256 against the manifest")
    verify.add_argument("bundle")
    a = p.parse_args(argv)
    try:
        if a.command == "strip":
            manifest = strip_to_engine(a.bundle, a.out)
        else:
            manifest = verify_bundle(a.bundle)
    except BundleError as e:
        print(f"pixelvla-bundle: error: {e}", file=sys.stderr)
        return 2
    summary = {k: manifest[k] for k in ("model_id", "onnx", "engine", "tensorrt")}
    summary["bytes"] = sum(meta["bytes"] for meta in manifest["files"].values())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
