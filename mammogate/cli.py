"""The ``mammogate`` command."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mammogate import DISCLAIMER, __version__
from mammogate.config import ConfigError, PolicyError, Settings, StartupError, load_settings

if TYPE_CHECKING:
    from mammogate.db import Database

log = logging.getLogger("mammogate")

ROLES = ("admin", "radiologist", "viewer")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback) when there is one. What a record says is
    what the text format says: UIDs and AE titles, never patient data."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    # pynetdicom logs every PDU at INFO; its warnings and errors are what an admin needs.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_roles(args, ("scp", "worker", "sender", "web"))


def cmd_role(args: argparse.Namespace) -> int:
    return _run_roles(args, (args.command,), status_port=args.status_port)


def _run_roles(args: argparse.Namespace, roles: Sequence[str], *,
               status_port: int | None = None) -> int:
    settings = _settings(args)
    _configure_logging(settings.node.log_level, settings.node.log_format)
    from mammogate.app import run_roles
    from mammogate.db import DatabaseError
    from mammogate.inference import InferenceError
    from mammogate.web import SessionKeyError

    try:
        return run_roles(settings, roles, status_port=status_port)
    except (InferenceError, DatabaseError, SessionKeyError) as exc:
        log.critical("cannot start: %s", exc)
        return 1
    except PolicyError as exc:
        log.critical("refusing to start: %s", exc)
        return 2
    except StartupError as exc:
        log.critical("cannot start: %s", exc)
        return 1


def _password_from_stdin(args: argparse.Namespace) -> str | None:
    """The first line of standard input; None (after saying why) without --password-stdin:
    a password is never an argument, which other users could read in the process list."""
    if not args.password_stdin:
        print("error: give the password on standard input with --password-stdin", file=sys.stderr)
        return None
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging("WARNING")
    password = _password_from_stdin(args)
    if password is None:
        return 2
    from mammogate.app import open_database
    from mammogate.web.auth.users import create_local_user

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


def cmd_user_list(args: argparse.Namespace) -> int:
    from mammogate.web.auth.accounts import list_accounts

    with _database(args) as (_settings_, db), db.read_session() as session:
        accounts = list_accounts(session)
    print(f"{'user':<24} {'role':<12} {'state':<9} {'sign-in':<6} {'last sign-in (UTC)':<19}")
    for a in accounts:
        last = f"{a.last_login_at:%Y-%m-%d %H:%M:%S}" if a.last_login_at else "never"
        print(f"{a.username:<24} {a.role:<12} {'disabled' if a.disabled else 'enabled':<9} "
              f"{'local' if a.local else 'OIDC':<6} {last:<19}")
    return 0


def _account_change(args: argparse.Namespace, change: Callable[[Database], int],
                    done: str) -> int:
    with _database(args) as (_settings_, db):
        try:
            ended = change(db)
        except (LookupError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{done}; {ended} portal sign-in(s) ended")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    from mammogate.web.auth.accounts import set_disabled

    return _account_change(
        args, lambda db: set_disabled(db, args.name, args.disable, actor=_actor()),
        f"user {args.name} {'disabled' if args.disable else 'enabled'}")


def cmd_user_set_role(args: argparse.Namespace) -> int:
    from mammogate.web.auth.accounts import set_role

    return _account_change(args, lambda db: set_role(db, args.name, args.role, actor=_actor()),
                           f"user {args.name} now has role {args.role}")


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    from mammogate.web.auth.accounts import reset_password

    password = _password_from_stdin(args)
    if password is None:
        return 2
    return _account_change(
        args, lambda db: reset_password(db, args.name, password, actor=_actor()),
        f"password of user {args.name} reset")


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[tuple[Settings, Database]]:
    """The settings and the node's database (migrated; seeded on first start) for a command."""
    settings = _settings(args)
    _configure_logging("WARNING")
    from mammogate.app import open_database

    db = open_database(settings)
    try:
        yield settings, db
    finally:
        db.dispose()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry for this uid (a container)
        return f"cli:uid {os.getuid()}"


def cmd_config_apply(args: argparse.Namespace) -> int:
    from mammogate.db.seed import apply_config

    with _database(args) as (settings, db), db.session() as session:
        changes = apply_config(session, settings, actor=_actor())
    for line in changes:
        print(f"  {line}")
    print(f"configuration applied ({len(changes)} differences): peers, destinations and routes "
          "now match the file")
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    from mammogate.db.seed import config_diff

    with _database(args) as (settings, db), db.read_session() as session:
        differences = config_diff(session, settings)
    if not differences:
        print("the database's peers, destinations and routes match the file")
        return 0
    print(f"{len(differences)} differences between the database (what the node uses) and the "
          "file (`mammogate config apply` makes the database follow the file):")
    for line in differences:
        print(f"  {line}")
    return 1


def cmd_route_explain(args: argparse.Namespace) -> int:
    from mammogate.analysis import explain_files, explain_study, route_rules
    from mammogate.db.admin import RequestRefused
    from mammogate.routing import RouteRule, describe

    with _database(args) as (settings, db), db.read_session() as session:
        if args.file_routes:
            rules = [RouteRule.from_record(r) for r in settings.routes]
            source = "the configuration file's routes"
        else:
            rules = route_rules(session)
            source = "the database's routes (what the node uses)"
        target = Path(args.target)
        try:
            if target.exists():
                verdicts = explain_files([target], rules, calling_ae_title=args.calling_ae_title,
                                         called_ae_title=settings.dicom.ae_title)
                print(f"{target}: {source}; calling AE title "
                      f"{args.calling_ae_title or '(not given)'}; not analysed")
            else:
                state, verdicts = explain_study(session, args.target, rules)
                print(f"study {args.target} ({state}): {source}")
        except RequestRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(describe(verdicts))
    return 0


def cmd_study_reanalyse(args: argparse.Namespace) -> int:
    from mammogate.db.admin import RequestRefused, request_reanalysis

    with _database(args) as (_settings_, db):
        try:
            with db.session() as session:
                job = request_reanalysis(session, args.study_uid, actor=_actor())
                job_id = job.id
        except RequestRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"analysis of study {args.study_uid} queued (job {job_id}); its results will "
          "supersede the current ones")
    return 0


def cmd_study_purge(args: argparse.Namespace) -> int:
    from mammogate.db.admin import RequestRefused, purge_study, remove_purged_files

    if not args.yes:
        print("error: purging removes the study's images, results and objects from this node for "
              "good; add --yes to confirm", file=sys.stderr)
        return 2
    with _database(args) as (settings, db):
        try:
            with db.session() as session:
                purged = purge_study(session, args.study_uid, actor=_actor(), reason=args.reason)
        except RequestRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        problems = remove_purged_files(purged, [settings.data_dir])
    print(f"study {args.study_uid} purged: {purged.instances} image(s), {purged.analyses} analysis(es), "
          f"{purged.reports} result object(s), {purged.deliveries} delivery(ies); the audit log keeps a record")
    for problem in problems:
        print(f"warning: not removed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_delivery_resubmit(args: argparse.Namespace) -> int:
    from mammogate.db.admin import RequestRefused, request_resubmission

    with _database(args) as (_settings_, db):
        try:
            with db.session() as session:
                rows = request_resubmission(
                    session, actor=_actor(), delivery_ids=args.ids,
                    study_instance_uid=args.study, dead=args.dead,
                )
                ids = [row.id for row in rows]
        except RequestRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{len(ids)} deliveries queued again: {', '.join(map(str, ids)) or 'none'}")
    return 0


def cmd_delivery_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from mammogate.db import Analysis, Delivery, Report, Study

    with _database(args) as (_settings_, db), db.read_session() as session:
        query = select(Delivery).order_by(Delivery.id)
        if args.state:
            query = query.where(Delivery.state == args.state)
        if args.study:
            query = (query.join(Report).join(Report.analysis)
                     .join(Study, Study.id == Analysis.study_id)
                     .where(Study.study_instance_uid == args.study))
        rows = list(session.scalars(query))
        print(f"{'id':>6}  {'state':<9} {'att':>3}  {'destination':<16} {'route':<16} object")
        for row in rows:
            print(f"{row.id:>6}  {row.state:<9} {row.attempts:>3}  {row.destination.name:<16} "
                  f"{row.route:<16} {row.report.kind} {row.report.sop_instance_uid}")
            if row.last_error:
                print(f"{'':>8}last error: {row.last_error}")
    return 0


def cmd_association_list(args: argparse.Namespace) -> int:
    from mammogate.db.admin import association_history

    with _database(args) as (_settings_, db), db.read_session() as session:
        rows = association_history(session, limit=args.limit, calling_ae_title=args.calling,
                                   rejected_only=args.rejected)
        print(f"{'id':>6}  {'requested (UTC)':<19}  {'calling':<16} {'called':<16} "
              f"{'from':<22} {'outcome':<9} {'stored':>6} {'refused':>7}")
        for row in rows:
            where = f"{row.address}:{row.port}"
            print(f"{row.id:>6}  {row.requested_at:%Y-%m-%d %H:%M:%S}  {row.calling_ae_title:<16} "
                  f"{row.called_ae_title:<16} {where:<22} {row.outcome:<9} "
                  f"{row.instances_stored:>6} {row.instances_refused:>7}")
            if row.reason:
                print(f"{'':>8}reason: {row.reason}")
            if row.security:
                print(f"{'':>8}secured: {row.security}")
    return 0


def cmd_destination_test(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from mammogate.app import destination_backends
    from mammogate.db import DestinationRow
    from mammogate.delivery import SendError, backend_for

    with _database(args) as (settings, db), db.read_session() as session:
        row = session.scalar(select(DestinationRow).where(DestinationRow.name == args.name))
        if row is None:
            names = ", ".join(session.scalars(select(DestinationRow.name))) or "none"
            print(f"error: no destination {args.name!r} in the database (it has: {names})",
                  file=sys.stderr)
            return 1
        session.expunge(row)
    try:
        said = backend_for(destination_backends(settings), row).test(row)
    except SendError as exc:
        print(f"{args.name}: FAILED: {exc.reason}")
        return 1
    print(f"{args.name}: OK: {said}")
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return value


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
    role_help = {
        "scp": "run the DICOM SCP alone (receives studies; one per DICOM port)",
        "worker": "run an analysis worker alone (loads the model once; run as many as needed)",
        "sender": "run a result sender alone (delivers result objects; as many as needed)",
        "web": "run the web portal alone (as many as needed, behind a load balancer)",
    }
    for name, helptext in role_help.items():
        p = with_config(sub.add_parser(
            name, help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}. The roles run apart share one "
            "database (PostgreSQL: database.url) and one spool (node.data_dir, shared storage "
            "when they run on several machines); `serve` runs all four in one process.",
        ))
        if name != "web":
            p.add_argument("--status-port", type=_port, metavar="PORT",
                           help="port of the status server (/healthz, /ready, /metrics); "
                           "default status.port, 0 for a free one")
        p.set_defaults(func=cmd_role, status_port=None)

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
    p = with_config(user_sub.add_parser("list", help="every account: role, state, last sign-in"))
    p.set_defaults(func=cmd_user_list)
    for action, helptext in (("disable", "disable an account (its sign-ins end at once)"),
                             ("enable", "enable a disabled account")):
        p = with_config(user_sub.add_parser(action, help=helptext))
        p.add_argument("name", help="user name")
        p.set_defaults(func=cmd_user_disable, disable=action == "disable")
    p = with_config(user_sub.add_parser(
        "set-role", help="give an account another role (its sign-ins end)"))
    p.add_argument("name", help="user name")
    p.add_argument("role", choices=ROLES)
    p.set_defaults(func=cmd_user_set_role)
    p = with_config(user_sub.add_parser(
        "reset-password", help="a new password from standard input (its sign-ins end)"))
    p.add_argument("name", help="user name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the "
                   "first line of standard input (required)")
    p.set_defaults(func=cmd_user_reset_password)

    config = sub.add_parser("config", help="configuration tasks")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = with_config(config_sub.add_parser(
        "apply", help="re-sync peers, destinations and routes from the file into the database",
        description="Make the database's allowed peers, destinations and routes equal to the "
        "configuration file (they are seeded from it only on first start).",
    ))
    p.set_defaults(func=cmd_config_apply)
    p = with_config(config_sub.add_parser(
        "diff", help="show where the file's peers, destinations and routes differ from the "
        "database's (exit status 1 when they differ)",
    ))
    p.set_defaults(func=cmd_config_diff)

    route = sub.add_parser("route", help="routing rules")
    route_sub = route.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    p = with_config(route_sub.add_parser(
        "explain", help="which routes fire for a study or a file, and why, clause by clause",
        description="Dry-run the routing rules: for a study on this node (by Study Instance "
        "UID, with its current result) or for DICOM files not sent yet (a file or a folder), "
        "print each route's verdict and each clause's.",
    ))
    p.add_argument("target", metavar="FILE_OR_STUDY_UID", help="a DICOM file or folder, or a "
                   "Study Instance UID on this node")
    p.add_argument("--calling-ae-title", default="", help="for files: the AE title that would "
                   "send them")
    p.add_argument("--file-routes", action="store_true", help="evaluate the configuration "
                   "file's routes instead of the database's")
    p.set_defaults(func=cmd_route_explain)

    study = sub.add_parser("study", help="studies on this node")
    study_sub = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    p = with_config(study_sub.add_parser(
        "reanalyse", help="analyse a study again (new model, lost results); the new results "
        "supersede the current ones and their objects name their predecessors",
    ))
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.set_defaults(func=cmd_study_reanalyse)
    p = with_config(study_sub.add_parser(
        "purge", help="remove a study and everything made from it from this node (wrong patient, "
        "erasure request); results already delivered stay at their destinations; audited",
    ))
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--reason", required=True, help="why, for the audit log (e.g. 'wrong patient')")
    p.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    p.set_defaults(func=cmd_study_purge)

    delivery = sub.add_parser("delivery", help="deliveries of result objects")
    delivery_sub = delivery.add_subparsers(dest="delivery_command", required=True,
                                           metavar="ACTION")
    p = with_config(delivery_sub.add_parser(
        "resubmit", help="send deliveries again from scratch: by id, all of a study, or all dead",
    ))
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids")
    p.add_argument("--study", metavar="STUDY_UID", help="every delivery of the study's current "
                   "analysis")
    p.add_argument("--dead", action="store_true", help="every dead delivery (with --study: of "
                   "that study)")
    p.set_defaults(func=cmd_delivery_resubmit)
    p = with_config(delivery_sub.add_parser("list", help="list deliveries and their last error"))
    p.add_argument("--study", metavar="STUDY_UID")
    p.add_argument("--state", choices=("pending", "sending", "delivered", "dead"))
    p.set_defaults(func=cmd_delivery_list)

    association = sub.add_parser("association", help="DICOM associations requested of the node")
    association_sub = association.add_subparsers(dest="association_command", required=True,
                                                 metavar="ACTION")
    p = with_config(association_sub.add_parser(
        "list", help="the latest associations: who, from where, accepted or rejected and why, "
        "instances stored"))
    p.add_argument("--limit", type=int, default=50, help="how many (newest first; default 50)")
    p.add_argument("--calling", metavar="AE_TITLE", help="only this calling AE title")
    p.add_argument("--rejected", action="store_true", help="only rejected associations")
    p.set_defaults(func=cmd_association_list)

    destination = sub.add_parser("destination", help="destinations of result objects")
    destination_sub = destination.add_subparsers(dest="destination_command", required=True,
                                                 metavar="ACTION")
    p = with_config(destination_sub.add_parser(
        "test", help="check that a destination answers (C-ECHO for DICOM, an HTTP probe for "
        "Orthanc REST and DICOMweb)",
    ))
    p.add_argument("name", help="the destination's name")
    p.set_defaults(func=cmd_destination_test)

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
    if args.command in ("serve", "scp", "worker", "sender", "web", "user", "config", "db",
                        "route", "study", "delivery", "destination"):
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
