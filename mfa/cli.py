"""The ``mfa`` command: serve, and the operator's tasks on the same database."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import uvicorn
from sqlalchemy.engine import make_url
from uvicorn.config import STARTUP_FAILURE

from . import outage, schema, seedfile, workers
from .config import ConfigError, Settings
from .context import CLI, Context
from .db import Database
from .errors import MfaError
from .observability import log_config
from .services import admin, audit, hardware, keys, maintenance, users
from .times import parse_time

Command = Callable[[argparse.Namespace, Context], int]


# The exit status when the database cannot be reached (``mfa.outage``): a supervisor may retry.
UNAVAILABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"mfa: configuration: {e}", file=sys.stderr)
        return 2
    try:
        return _command(args, settings)
    except Exception as e:
        if not outage.is_outage(e):
            raise
        # The driver's reason (refused, unknown host, authentication failed) names no secret;
        # the URL goes out without its password.
        reason = str(outage.driver_error(e)).strip().splitlines()[0]
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        print(f"mfa: the database at {where} cannot be reached: {reason}", file=sys.stderr)
        return UNAVAILABLE


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return _serve(args, settings)
    ctx = Context.create(settings)
    handler: Command = args.handler
    try:
        if handler is not _db_upgrade:
            schema.ensure(ctx.db, upgrade_if_behind=False)
        return handler(args, ctx)
    except schema.SchemaBehind as e:
        print(f"mfa: {e}", file=sys.stderr)
        return 2
    except MfaError as e:
        print(f"mfa: {e.message}", file=sys.stderr)
        return 1
    finally:
        ctx.db.dispose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfa", description="Multi-factor authentication service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--upgrade", action="store_true", help="upgrade an old database schema before serving"
    )

    db = commands.add_parser("db", help="the database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="create the schema or bring it to this release").set_defaults(
        handler=_db_upgrade
    )
    db.add_parser(
        "prune",
        help="delete old audit events, dead login transactions and dead refresh-token families",
    ).set_defaults(handler=_db_prune)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="action", required=True
    )
    add = user.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="give the admin role")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from one line of stdin"
    )
    add.set_defaults(handler=_user_add)
    unlock = user.add_parser("unlock", help="clear a user's lock, failure count and back-off")
    unlock.add_argument("username")
    unlock.set_defaults(handler=_user_unlock)
    user.add_parser("list", help="users with their lock state and factors").set_defaults(
        handler=_user_list
    )
    reset = user.add_parser(
        "reset-factors",
        help="remove every factor of a user who lost their device (next login enrolls anew)",
    )
    reset.add_argument("username")
    reset.set_defaults(handler=_user_reset_factors)

    log = commands.add_parser("audit", help="the audit log").add_subparsers(
        dest="action", required=True
    )
    export = log.add_parser("export", help="print audit events as JSON lines, oldest first")
    export.add_argument("--since", type=_time, help="Unix seconds or RFC 3339 (inclusive)")
    export.add_argument("--until", type=_time, help="Unix seconds or RFC 3339 (exclusive)")
    export.add_argument("--username")
    export.add_argument("--event")
    export.set_defaults(handler=_audit_export)
    prune = log.add_parser(
        "prune", help="delete events older than MFA_AUDIT_RETENTION_DAYS (or --days)"
    )
    prune.add_argument("--days", type=_days, help="keep this many days instead")
    prune.set_defaults(handler=_audit_prune)

    token = commands.add_parser("token", help="hardware tokens").add_subparsers(
        dest="action", required=True
    )
    imp = token.add_parser(
        "import", help="import hardware tokens from a PSKC (RFC 6030) or OATH CSV seed file"
    )
    imp.add_argument("file", help="the seed file ('-' for standard input)")
    unlock_with = imp.add_mutually_exclusive_group()
    unlock_with.add_argument("--password", help="the password of a PBKDF2-protected PSKC file")
    unlock_with.add_argument(
        "--password-stdin",
        action="store_true",
        help="read that password from one line of standard input",
    )
    unlock_with.add_argument("--key-hex", help="the pre-shared AES key of the PSKC file, in hex")
    imp.add_argument(
        "--dry-run", action="store_true", help="read and check the file, import nothing"
    )
    imp.set_defaults(handler=_token_import)
    token.add_parser("list", help="the inventory: serial, type, assigned user").set_defaults(
        handler=_token_list
    )
    give = token.add_parser("assign", help="give a token to a user as an active factor")
    give.add_argument("serial")
    give.add_argument("username")
    give.set_defaults(handler=_token_assign)
    take = token.add_parser("unassign", help="take a token back into stock")
    take.add_argument("serial")
    take.set_defaults(handler=_token_unassign)

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="action", required=True
    )
    rotate = keys.add_parser("rotate", help="make a new signing key current")
    rotate.add_argument(
        "--after",
        type=_seconds,
        default=0,
        metavar="SECONDS",
        help="publish the new key now and let it sign only that many seconds from now, so "
        "that verifiers that cache the JWKS (max-age 60) know it first; 120 covers them",
    )
    rotate.set_defaults(handler=_keys_rotate)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Settle the schema once here, before the workers start, so they never race over it.
    db = Database(settings.database_url)
    try:
        schema.ensure(db, upgrade_if_behind=args.upgrade)
    except schema.SchemaBehind as e:
        print(f"mfa: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    if "MFA_HASH_CONCURRENCY" not in os.environ:
        os.environ["MFA_HASH_CONCURRENCY"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    if args.workers > 1:
        # Each worker writes its metrics here; /metrics in any worker adds them all up.
        metrics_dir = tempfile.mkdtemp(prefix="mfa-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    logging_config = log_config(settings.log_level)
    if not settings.access_log:
        logging_config["loggers"]["mfa.access"] = {"level": "WARNING"}
    try:
        _run_uvicorn(args, logging_config)
    finally:
        if args.workers > 1:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _run_uvicorn(args: argparse.Namespace, logging_config: dict[str, Any]) -> None:
    config = uvicorn.Config(
        "mfa.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,  # X-Forwarded-For is read only from MFA_TRUSTED_PROXIES
        server_header=False,
        access_log=False,  # ours is mfa.access, with the route template and request id
        log_config=logging_config,
        timeout_graceful_shutdown=10,
    )
    if args.workers > 1:
        workers.run(config)  # a listening socket for each worker
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        raise MfaError("The passwords differ.")
    return first


def _user_add(args: argparse.Namespace, ctx: Context) -> int:
    password = _read_password(args.password_stdin)
    user = anyio.run(
        lambda: users.create(
            ctx, args.username, password, CLI, admin=args.admin, event="user_created"
        )
    )
    print(f"created {user['username']} ({user['id']}){' admin' if args.admin else ''}")
    return 0


def _time(value: str) -> int:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not Unix seconds or an RFC 3339 date-time"
        ) from None


def _days(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("--days must be a whole number of days, at least 1")
    return int(value)


def _actor() -> str:
    """Who ran the command, for ``detail.actor`` in the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in this environment
        return "cli"


def _user_unlock(args: argparse.Namespace, ctx: Context) -> int:
    cleared = users.unlock(ctx, args.username, CLI, actor=_actor())
    print(f"unlocked {args.username}" if cleared else f"{args.username} was not locked")
    return 0


def _db_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    before = schema.current(ctx.db)
    schema.upgrade(ctx.db)
    print(f"schema at {schema.head()} (was {before or 'empty'})")
    return 0


def _token_import(args: argparse.Namespace, ctx: Context) -> int:
    password = args.password
    if args.password_stdin:
        if args.file == "-":
            raise MfaError("Standard input cannot give both the file and its password.")
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read(seedfile.MAX_FILE_BYTES + 1)
        else:
            with open(args.file, "rb") as f:
                data = f.read(seedfile.MAX_FILE_BYTES + 1)
    except OSError as e:
        raise MfaError(f"cannot read {args.file}: {e.strerror}") from None
    key = hardware.parse_key_hex(args.key_hex) if args.key_hex is not None else None
    report = hardware.import_file(ctx, data, CLI, password=password, key=key, dry_run=args.dry_run)
    for line in report.lines():
        print(line)
    return 0


def _token_list(args: argparse.Namespace, ctx: Context) -> int:
    for token in hardware.listing(ctx):
        print(f"{token['serial']}\t{token['type']}\t{token['username'] or '-'}")
    return 0


def _token_assign(args: argparse.Namespace, ctx: Context) -> int:
    result = hardware.assign(ctx, args.serial, args.username, CLI)
    print(f"{result['serial']} assigned to {result['username']} (factor {result['factor']['id']})")
    return 0


def _token_unassign(args: argparse.Namespace, ctx: Context) -> int:
    result = hardware.unassign(ctx, args.serial, CLI)
    print(f"{result['serial']} unassigned, back in stock")
    return 0


def _user_list(args: argparse.Namespace, ctx: Context) -> int:
    offset = 0
    print(f"{'USERNAME':<24} {'ADMIN':<5} {'STATE':<20} FACTORS")
    while page := admin.list_users(ctx, limit=500, offset=offset):
        for u in page:
            if u["locked"]:
                state = "locked"
            elif u["failures"] or u["password_failures"]:
                state = f"failures {u['failures']}/{u['password_failures']} (2nd/pwd)"
            else:
                state = "ok"
            factors = ", ".join(
                f["type"] + ("" if f["status"] == "active" else f" ({f['status']})")
                for f in u["factors"]
            )
            admin_flag = "yes" if u["admin"] else ""
            print(f"{u['username']:<24} {admin_flag:<5} {state:<20} {factors or '-'}")
        offset += len(page)
    return 0


def _user_reset_factors(args: argparse.Namespace, ctx: Context) -> int:
    done = admin.reset_factors(ctx, args.username, _actor(), CLI)
    print(
        f"reset {done['username']}: {done['factors_removed']} factor(s) removed, "
        f"{done['refresh_tokens_revoked']} refresh token(s) revoked; "
        "the next login enrolls a new factor"
    )
    return 0


def _audit_export(args: argparse.Namespace, ctx: Context) -> int:
    where = audit.Filter(
        username=args.username, event=args.event, since=args.since, until=args.until
    )
    with ctx.db.read() as session:
        for row in audit.oldest_first(session, where):
            sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
    return 0


def _audit_prune(args: argparse.Namespace, ctx: Context) -> int:
    days = args.days if args.days is not None else ctx.settings.audit_retention_days
    if days == 0:
        print("MFA_AUDIT_RETENTION_DAYS is 0: audit events are kept for ever; nothing pruned")
        return 0
    deleted = maintenance.prune_audit(ctx, days)
    print(f"deleted {deleted} audit event(s) older than {days} day(s)")
    return 0


def _db_prune(args: argparse.Namespace, ctx: Context) -> int:
    pruned = maintenance.prune_all(ctx)
    print(" ".join(f"{name}={count}" for name, count in pruned.as_dict().items()))
    return 0


# A staged key waits at most a day: longer is more likely a typo than a plan.
_MAX_KEY_DELAY_S = 86_400


def _seconds(text: str) -> int:
    """A whole number of seconds, zero or more (argparse's type for ``--after``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= _MAX_KEY_DELAY_S:
        raise argparse.ArgumentTypeError(f"must be 0 to {_MAX_KEY_DELAY_S} seconds")
    return value


def _keys_rotate(args: argparse.Namespace, ctx: Context) -> int:
    now = ctx.now()
    kid = keys.rotate_now(ctx.db, ctx.box, now, CLI, after=args.after)
    if args.after:
        # RFC 3339, as the other commands take times (``mfa.times``).
        starts = datetime.fromtimestamp(now + args.after, UTC).isoformat().replace("+00:00", "Z")
        print(f"published now; signs from {starts} ({now + args.after})")
    print(f"new signing key {kid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
