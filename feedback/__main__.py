"""`python -m feedback [--config FILE]`: run the feedback service (the same as `trimtab feedback`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feedback.server import run
from trimtab.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedback", description="Serve FeedbackService (gRPC + HTTP).")
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (default: $TRIMTAB_CONFIG)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"feedback: {exc}", file=sys.stderr)
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
