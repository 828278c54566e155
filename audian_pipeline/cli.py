"""`audian-pipeline`: the command line. Each command reads the settings from the environment."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timezone
from typing import NoReturn

from audian_pipeline.emulator.demo_account import DEMO_DAYS, DEMO_PER_DAY, DEMO_SEED
from audian_pipeline.settings import (
    DEFAULT_API_PORT,
    DEFAULT_STORAGE_PORT,
    DEFAULT_WEBHOOKS_PORT,
    RangeError,
    SettingError,
    Settings,
)
from audian_pipeline.sockets import PortInUse

DEFAULT_WEBHOOK_URL = f"http://127.0.0.1:{DEFAULT_WEBHOOKS_PORT}/webhooks/audian"
"""Where `audian-pipeline webhooks` listens by default, so the two work together when started by hand."""


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an instant: use ISO 8601, e.g. 2026-11-20T15:30:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: use YYYY-MM-DD, e.g. 2026-11-20") from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (the usage is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _emulator_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_API_PORT, help=f"API port (default {DEFAULT_API_PORT})")
    parser.add_argument("--storage-port", type=int, default=DEFAULT_STORAGE_PORT,
                        help="port of the storage host that serves signed download URLs "
                             f"(default {DEFAULT_STORAGE_PORT})")
    _account_args(parser)
    parser.add_argument("--clock", type=_timestamp, default=None,
                        help="freeze the emulator's clock at this ISO instant (default: run with the real clock)")
    parser.add_argument("--webhook-url", default=DEFAULT_WEBHOOK_URL,
                        help=f"deliver signed webhooks to this URL (default {DEFAULT_WEBHOOK_URL}, where "
                             "`audian-pipeline webhooks` listens); held and retried while nothing listens there")
    parser.add_argument("--no-webhooks", action="store_true", help="deliver no webhooks at all")
    parser.add_argument("--faults", type=float, default=0.0, metavar="RATE",
                        help="turn every fault on at this rate, e.g. 0.1 (default 0: no faults)")
    parser.add_argument("--contract-variations", action="store_true",
                        help="answer as the contract allows, not only in the friendliest shape: nulls before "
                             "completion, extra fields, recordings that settle later, URLs expiring after a cut, "
                             "unsafe IDs; with cut downloads and 429 Retry-After as faults unless --faults sets them")


def _account_args(parser: argparse.ArgumentParser) -> None:
    """The emulated account; the defaults are the demo's, shared by demo, emulator and dev."""
    parser.add_argument("--seed", type=int, default=DEMO_SEED,
                        help=f"seed of the generated account (default {DEMO_SEED})")
    parser.add_argument("--days", type=int, default=DEMO_DAYS,
                        help=f"days of history before the clock (default {DEMO_DAYS}; older than 30 are deleted)")
    parser.add_argument("--per-day", type=int, default=DEMO_PER_DAY,
                        help=f"recordings created per day (default {DEMO_PER_DAY})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audian-pipeline", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and Dagster's own log lines on the terminal")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    emulator = commands.add_parser("emulator", help="serve the embedded Audian API and its storage host until stopped")
    _emulator_args(emulator)

    webhooks = commands.add_parser("webhooks", help="serve the webhook receiver (POST /webhooks/audian, GET /healthz)")
    webhooks.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    webhooks.add_argument("--port", type=int, default=DEFAULT_WEBHOOKS_PORT,
                          help=f"port (default {DEFAULT_WEBHOOKS_PORT})")

    demo = commands.add_parser(
        "demo", help="start the emulator and the receiver, backfill every retained day, print the reports")
    _account_args(demo)

    dev = commands.add_parser(
        "dev", help="the emulator, the receiver and the Dagster UI wired together (the demo's account); "
                    "Ctrl-C stops them all")
    dev.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")

    run = commands.add_parser("run", help="materialise every asset for a day range, in one process")
    run.add_argument("--start", type=_day, required=True, help="first UTC day, YYYY-MM-DD")
    run.add_argument("--end", type=_day, required=True, help="last UTC day, YYYY-MM-DD (inclusive)")

    worker = commands.add_parser(
        "worker", help="serve steps of runs launched with AUDIAN_EXECUTOR=celery (same settings as the runs)")
    worker.add_argument("--concurrency", type=int, default=2,
                        help="steps this worker runs at once, each in its own process (default 2)")

    report = commands.add_parser("report", help="print one report from the warehouse: a summary that fits 100 columns")
    report.add_argument("name", help="durations, failure_reasons, storage_quota or retention_expiry")
    report_form = report.add_mutually_exclusive_group()
    report_form.add_argument("--full", action="store_true", help="print every row and column of the view")
    report_form.add_argument("--csv", action="store_true", help="print every row of the view as CSV")
    report_form.add_argument("--html", metavar="FILE",
                             help="write a self-contained page with the chart, the summary and every row")

    _archive_commands(commands)

    sql = commands.add_parser(
        "sql", help="a read-only SQL prompt on the warehouse (statements separated by ';' when piped in)")
    sql.add_argument("-c", dest="statements", metavar="SQL", help="run these statements and exit")
    sql.add_argument("--csv", action="store_true", help="print every row as CSV, not a table of the first rows")
    return parser


def _archive_commands(commands: argparse._SubParsersAction) -> None:
    """The archive's keyset and restores (README "Production settings and commands")."""
    keyset = commands.add_parser("keyset", help="create or rotate the archive's Tink keyset (AUDIAN_ARCHIVE_KEYSET)")
    actions = keyset.add_subparsers(dest="keyset_command", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="write a new keyset, mode 0600; an existing file is never overwritten")
    create.add_argument("path", help="where to write the keyset (JSON); then set AUDIAN_ARCHIVE_KEYSET to it")
    rotate = actions.add_parser("rotate", help="add a new primary key; objects under the older keys still decrypt")
    rotate.add_argument("path", help="the keyset file to rotate in place")

    restore = commands.add_parser(
        "restore", help="write an archived recording, decrypted and checked against its sha256, whole or not at all")
    restore.add_argument("recording_id", help="the recording's id, e.g. rec_...")
    restore.add_argument("--out", required=True, metavar="FILE", help="where to write the audio")

    hold = commands.add_parser("hold", help="place or lift a legal hold: no disposal touches a held recording")
    hold_actions = hold.add_subparsers(dest="hold_command", required=True, parser_class=_Parser)
    hold_add = hold_actions.add_parser("add", help="hold a recording (placing it again replaces the reason)")
    hold_add.add_argument("recording_id", help="the recording's id, e.g. rec_...")
    hold_add.add_argument("--reason", required=True, help="why it is held, e.g. the case or request it serves")
    hold_remove = hold_actions.add_parser("remove", help="lift a recording's hold; retention applies to it again")
    hold_remove.add_argument("recording_id", help="the recording's id")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("audian_pipeline").setLevel(logging.INFO)
    handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
    try:
        return handler(args, Settings.from_env()) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure is one line; the traceback only under --debug
        if args.debug:
            raise
        print(f"audian-pipeline: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, (SettingError, RangeError, PortInUse)) else 1


def _one_line(exc: BaseException) -> str:
    """Our errors say what happened and what to do; anything else says what it is and where to look."""
    if isinstance(exc, (SettingError, RangeError, PortInUse)):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)"


def _cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.emulator.demo_account import DEMO_MAX_DURATION, reusable_epoch
    from audian_pipeline.emulator.faults import FaultConfig
    from audian_pipeline.emulator.server import serve
    from audian_pipeline.emulator.variations import REALISTIC_FAULTS, Variations

    faults = FaultConfig.everything(args.faults) if args.faults else None
    if args.contract_variations and faults is None:
        faults = REALISTIC_FAULTS
    epoch = None if args.clock else reusable_epoch(
        settings.data_dir, seed=args.seed, days=args.days, per_day=args.per_day, max_duration=DEMO_MAX_DURATION,
        variations=Variations.realistic().to_dict() if args.contract_variations else None)
    serve(
        seed=args.seed, days=args.days, per_day=args.per_day, clock=args.clock, epoch=epoch,
        api_key=settings.api_key, webhook_url=None if args.no_webhooks else args.webhook_url,
        webhook_secret=settings.webhook_secret,
        faults=faults, variations=Variations.realistic() if args.contract_variations else None,
        host=args.host, port=args.port, storage_port=args.storage_port,
    )
    return 0


def _cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.webhooks.receiver import serve

    serve(args.host, args.port, settings.events_db, settings.webhook_secret)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.demo import run_demo

    return run_demo(days=args.days, per_day=args.per_day, seed=args.seed, settings=settings)


def _cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.dev import run_dev

    return run_dev(args.port, settings)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.runner import run_range

    return run_range(args.start, args.end, debug=args.debug)


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.workers import run_worker

    if args.concurrency < 1:
        raise SettingError(f"--concurrency must be at least 1 (got {args.concurrency}).")
    run_worker(args.concurrency)
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from audian_pipeline.warehouse.reports import print_report

    html_path = Path(args.html) if args.html else None
    return print_report(settings, args.name, full=args.full, csv=args.csv, html_path=html_path)


def _cmd_keyset(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from audian_pipeline.audio.crypto import create_keyset, rotate_keyset

    path = Path(args.path)
    if args.keyset_command == "create":
        key_id = create_keyset(path)
        print(f"keyset written to {path} (mode 0600, key id {key_id}); set AUDIAN_ARCHIVE_KEYSET={path} "
              "and keep the file as safe as the API key: without it the archive cannot be read")
    else:
        key_id = rotate_keyset(path)
        print(f"keyset {path}: new primary key {key_id}; objects encrypted under the older keys still decrypt")
    return 0


def _cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from audian_pipeline.audio.audit import AuditLog
    from audian_pipeline.audio.retrieve import RestoreError, restore
    from audian_pipeline.defs.resources import LakeResource

    lake = LakeResource()
    try:
        result = restore(args.recording_id, Path(args.out), lake=lake.lake_store(), cipher=lake.archive_cipher(),
                         audit=AuditLog(settings.data_dir, run_id="restore"))
    except RestoreError as exc:
        print(f"audian-pipeline: restore failed, nothing written to {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.recording_id} to {args.out}: {result.bytes:,} bytes, sha256 {result.sha256} "
          "matches the manifest")
    return 0


def _cmd_hold(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.audio.audit import AuditLog
    from audian_pipeline.audio.holds import lift_hold, place_hold
    from audian_pipeline.defs.resources import LakeResource

    lake, audit = LakeResource().lake_store(), AuditLog(settings.data_dir, run_id="hold")
    if args.hold_command == "add":
        hold = place_hold(lake, args.recording_id, args.reason, audit)
        print(f"{hold.recording_id} is on hold ({hold.reason}); no disposal touches it until `hold remove`")
    elif lift_hold(lake, args.recording_id, audit):
        print(f"hold on {args.recording_id} lifted; AUDIAN_ARCHIVE_RETENTION_DAYS applies to it again")
    else:
        print(f"{args.recording_id} was not on hold; nothing changed")
    return 0


def _cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from audian_pipeline.lake.paths import warehouse_path
    from audian_pipeline.warehouse.prompt import run_sql

    return run_sql(warehouse_path(settings.data_dir), args.statements, csv_output=args.csv)


if __name__ == "__main__":
    sys.exit(main())
