"""The ``mammogate`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mammogate import DISCLAIMER, __version__
from mammogate.config import ConfigError, Settings, load_settings

log = logging.getLogger("mammogate")

ROLES = ("admin", "radiologist", "viewer")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # pynetdicom logs every PDU at INFO; its warnings and errors are what an admin needs.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging(settings.node.log_level)
    from mammogate.app import PolicyError, serve
    from mammogate.db import DatabaseError
    from mammogate.inference import InferenceError
    from mammogate.web import SessionKeyError

    try:
        return serve(settings)
    except (InferenceError, DatabaseError, SessionKeyError) as exc:
        log.critical("cannot start: %s", exc)
        return 1
    except PolicyError as exc:
        log.critical("refusing to start: %s", exc)
        return 2


def cmd_user_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging("WARNING")
    if not args.password_stdin:
        print("error: give the password on standard input with --password-stdin", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    from mammogate.app import open_database
    from mammogate.web.auth import create_local_user

    db = open_database(settings)
    try:
        user = create_local_user(db, args.name, args.role, password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(f"user {user.username} added with role {user.role}")
    return 0


def cmd_config_apply(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging("INFO")
    from mammogate.app import open_database
    from mammogate.db.seed import apply_config

    db = open_database(settings)
    with db.session() as session:
        apply_config(session, settings)
    db.dispose()
    print("configuration applied: peers, destinations and routes now match the file")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging("INFO")
    from mammogate.app import open_database

    open_database(settings).dispose()
    print("database at the current schema")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    _configure_logging("INFO")
    from mammogate.training.train import run_train

    return run_train(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    _configure_logging("INFO")
    from mammogate.training.evaluate import run_evaluate

    return run_evaluate(args)


def cmd_synthetic(args: argparse.Namespace) -> int:
    _configure_logging("WARNING")
    from mammogate.training.synthetic import write_study

    lesion = {"yes": True, "no": False, "random": None}[args.lesion]
    study = write_study(Path(args.out), seed=args.seed, lesion=lesion, burned_in_label=args.burned_in_label)
    for path in study.paths:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammogate",
        description=f"DICOM/PACS node for breast-cancer AI. {DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"mammogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", metavar="FILE",
            help="TOML configuration file (default: $MAMMOGATE_CONFIG, else built-in defaults)",
        )
        return p

    p = with_config(sub.add_parser(
        "serve", help="run the DICOM SCP, worker, sender and web portal in one process",
        description="Run the whole node in one process: DICOM SCP, analysis worker, result "
        "sender and web portal, on SQLite in node.data_dir unless database.url says otherwise.",
    ))
    p.set_defaults(func=cmd_serve)

    user = sub.add_parser("user", help="manage local portal accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    p = with_config(user_sub.add_parser(
        "add", help="create a local account",
        description="Create a local portal account; the password is read from standard input.",
    ))
    p.add_argument("name", help="user name")
    p.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    p.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from the first line of standard input (required)",
    )
    p.set_defaults(func=cmd_user_add)

    config = sub.add_parser("config", help="configuration tasks")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = with_config(config_sub.add_parser(
        "apply", help="re-sync peers, destinations and routes from the file into the database",
        description="Make the database's allowed peers, destinations and routes equal to the "
        "configuration file (they are seeded from it only on first start).",
    ))
    p.set_defaults(func=cmd_config_apply)

    db = sub.add_parser("db", help="database tasks")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = with_config(db_sub.add_parser(
        "upgrade", help="apply the database migrations (serve also does this at start)",
    ))
    p.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser(
        "train", help="cross-validate the CNN on labelled data sets and write a model bundle",
        description="Cross-validate the CNN (patient-level folds) on labelled data sets and write "
        "a model bundle (model.keras, model.json with calibration, operating points and the "
        "cross-validated metrics) that `serve` can load. Resumes an interrupted run.",
    )
    from mammogate.training.options import add_evaluate_arguments, add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="score labelled data sets with a model bundle: report.json and report.html",
        description="Score labelled data sets with a model bundle through the serving path and "
        "write report.json and report.html (AUC with intervals, localisation, calibration, "
        "operating points, timing, and a trivial-statistics baseline).",
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "synthetic", help="write a synthetic 4-view mammography study (for demos and tests)",
        description="Write a synthetic 4-view MG study (R-CC, L-CC, R-MLO, L-MLO) as DICOM files.",
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--lesion", choices=("yes", "no", "random"), default="random",
        help="whether the study has a lesion (default: random)",
    )
    p.add_argument("--burned-in-label", action="store_true", help="burn film-style view labels into the background")
    p.set_defaults(func=cmd_synthetic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "user", "config", "db"):
        # The data directory (database, spool, reports, overlays) holds patient data: what
        # these commands create there is readable by this user only.
        os.umask(0o077)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
