"""Command-line options of ``mammogate train`` (TensorFlow-free, so the CLI parser builds fast)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--studies", type=int, default=160, help="synthetic training studies (default 160)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument(
        "--validation-studies", type=int, default=40,
        help="synthetic studies the operating point is chosen on (default 40, seeds disjoint from training)",
    )
    parser.add_argument(
        "--test-studies", type=int, default=20,
        help="held-out synthetic studies (seeds 9000+) evaluated end to end into model.json (default 20)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    return parser
