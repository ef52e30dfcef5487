"""`replayft`: the engine's commands (train, plan, efficiency, demo) plus the service's.

  replayft serve [--demo]          API + a training and a files worker, embedded defaults (or env)
  replayft api / replayft worker   the parts separately (the distributed setup)
  replayft inference               the model-serving process the API forwards completions to
  replayft db upgrade              apply migrations (also done at API and worker start-up)
  replayft keys create --team T    mint an API key (printed once, stored hashed)
  replayft keys list|revoke|rotate list keys (never the secrets), revoke one, replace one
  replayft corpora add NAME PATH   register a server-side replay corpus
  replayft models add NAME PATH    register a server-side base model

Web and queue modules are imported inside the command functions, so engine commands stay fast and
work without the service's dependencies.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from client.jobs import add_client_commands
from client.sweeps import add_sweep_commands
from replay_engine import cli as engine_cli

ENGINE_COMMANDS = ("train", "plan", "efficiency", "demo")
ADMIN_KEY_FILE = "admin_key.txt"


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


# ---------------------------------------------------------------------------- db and keys
def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from control.db.migrate import upgrade

    upgrade()
    _err("database is up to date")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from api.services.teams import create_key
    from control.db.migrate import upgrade
    from control.db.session import session_scope

    upgrade()
    with session_scope() as session:
        key = create_key(session=session, team_name=args.team, admin=args.admin, name=args.name)
    # the only thing on stdout, so `KEY=$(replayft keys create ...)` works
    sys.stdout.write(key + "\n")
    return 0


def _when(t: int | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


def cmd_keys_list(args: argparse.Namespace) -> int:
    from api.services.teams import KEY_PREFIX, list_keys
    from control.db.migrate import upgrade
    from control.db.session import session_scope

    upgrade()
    with session_scope() as session:
        rows = list_keys(session=session, team_name=args.team)
    table = [("ID", "TEAM", "PREFIX", "ADMIN", "CREATED", "LAST USED", "REVOKED", "NAME")]
    for key, team in rows:
        table.append(
            (
                key.id,
                team.name,
                KEY_PREFIX + key.prefix if key.prefix else "-",
                "yes" if key.is_admin else "no",
                _when(key.created_at),
                _when(key.last_used_at),
                _when(key.revoked_at),
                key.name or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        sys.stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from api.errors import APIError
    from api.services.teams import revoke_key
    from control.db.migrate import upgrade
    from control.db.session import session_scope

    upgrade()
    with session_scope() as session:
        try:
            key, team = revoke_key(session=session, key_id=args.key_id)
        except APIError as exc:
            _err(exc.message)
            return 1
    _err(f"revoked {key.id} (team {team.name!r})")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from api.errors import APIError
    from api.services.teams import rotate_key
    from control.db.migrate import upgrade
    from control.db.session import session_scope

    upgrade()
    with session_scope() as session:
        try:
            row, team, key = rotate_key(session=session, key_id=args.key_id)
        except APIError as exc:
            _err(exc.message)
            return 1
    _err(f"revoked {args.key_id}; new key {row.id} for team {team.name!r}")
    sys.stdout.write(key + "\n")  # as with `keys create`: the key alone on stdout
    return 0


def _register(args: argparse.Namespace, kind: str) -> int:
    from api.services.registry import register
    from control.db.migrate import upgrade
    from control.db.session import session_scope

    upgrade()
    with session_scope() as session:
        register(
            session=session,
            name=args.name,
            kind=kind,
            paths=args.paths,
            gguf_file=getattr(args, "gguf_file", None),
        )
    _err(f"registered {kind} {args.name!r}")
    return 0


def cmd_corpora_add(args: argparse.Namespace) -> int:
    return _register(args, "corpus")


def cmd_models_add(args: argparse.Namespace) -> int:
    args.paths = [args.path]
    return _register(args, "base")


# ---------------------------------------------------------------------------- processes
# Idle kept-alive connections are closed after this long. uvicorn's 5 s equals httpx's (and many
# clients') own expiry, so a client could send on a connection at the instant the server closed
# it ("Server disconnected without sending a response"); a server should outwait its clients.
KEEP_ALIVE_S = 75


def _run_api(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        "api.main:create_app", factory=True, host=host, port=port, timeout_keep_alive=KEEP_ALIVE_S
    )


def cmd_api(args: argparse.Namespace) -> int:
    from control.settings import get_settings

    get_settings().export_env()
    _run_api(args.host, args.port)
    return 0


def _inference_address(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def cmd_inference(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from control.settings import get_settings

    settings = get_settings()
    settings.export_env()
    host, port = _inference_address(settings.inference_url)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    uvicorn.run(
        "inference.server:create_app",
        factory=True,
        host=args.host or host,
        port=args.port or port,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0


def worker_argv(queues: str, concurrency: int, loglevel: str = "INFO") -> list[str]:
    from worker.app import child_recycling

    return [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname=replayft-{os.getpid()}@%h",  # unique per process: several per machine
        "--without-gossip",
        "--without-mingle",
        *child_recycling(queues),
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    from control.settings import get_settings
    from worker import metrics

    settings = get_settings()
    settings.export_env()  # before the Celery app reads the settings
    metrics.prepare(settings.worker_metrics_port)  # before anything imports prometheus-client
    from worker.app import celery_app

    celery_app.worker_main(worker_argv(args.queues, args.concurrency, args.loglevel))
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    """The periodic checks every worker runs beside itself (outbox relay, state sweep, lost-job
    check), in the foreground, without a worker: until SIGTERM or Ctrl-C."""
    import logging

    from control.db.migrate import upgrade
    from control.settings import get_settings

    get_settings().export_env()  # before the Celery app reads the settings
    upgrade()
    from worker.app import send
    from worker.maintenance import check_forever

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        check_forever(send, keep_going=lambda: True)
    except KeyboardInterrupt:
        pass
    return 0


def _first_start(data_dir: Path, demo: bool) -> None:
    """Create the default team's admin key (once) and, with --demo, its demo files."""
    from api.services.registry import register_demo
    from api.services.teams import create_key, get_or_create_team
    from control.db.session import session_scope
    from control.settings import get_settings

    key_file = data_dir / ADMIN_KEY_FILE
    with session_scope() as session:
        if not key_file.exists():
            key = create_key(session=session, team_name="default", admin=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
        _err(f"admin API key (team 'default'): {key_file}")
        if demo:
            team = get_or_create_team(session=session, name="default")
            for file in register_demo(session=session, team=team, settings=get_settings()):
                _err(f"demo file {file.id}: {file.filename} ({file.purpose})")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_serve(args: argparse.Namespace) -> int:
    from control.db.migrate import upgrade
    from control.settings import get_settings
    from replay_engine.launcher import die_with_parent

    settings = get_settings()
    settings.ensure_dirs()
    settings.export_env()
    upgrade()
    _first_start(settings.data_dir, args.demo)
    # a training worker and a files-only worker: uploads and job preparation have a slot of their
    # own, so they never wait behind training
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--queues", queues]
            + ["--concurrency", str(concurrency)],
            env=os.environ.copy(),
            preexec_fn=die_with_parent,
        )
        for queues, concurrency in (("training", args.concurrency), ("files", 1))
    ]
    # the model-serving process, on a free local port unless REPLAYFT_INFERENCE_URL names one
    if "REPLAYFT_INFERENCE_URL" not in os.environ:
        settings.inference_url = f"http://127.0.0.1:{_free_port()}"
        os.environ["REPLAYFT_INFERENCE_URL"] = settings.inference_url
    workers.append(
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", "inference"],
            env=os.environ.copy(),
            preexec_fn=die_with_parent,
        )
    )
    # uvicorn re-raises the SIGTERM it caught once it has shut down; turning that into SystemExit
    # lets the `finally` below stop the worker instead of leaving it orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pids = ", ".join(str(w.pid) for w in workers)
    _err(
        f"worker and model-serving pids {pids} (serving at {settings.inference_url}); "
        f"API on http://{args.host}:{args.port} (docs at /docs)"
    )
    try:
        _run_api(args.host, args.port)
    finally:
        for worker in workers:
            worker.terminate()  # warm shutdown: a running job's message goes back to the queue
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


# ---------------------------------------------------------------------------- wiring
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replayft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    engine_cli.add_engine_commands(sub)
    add_client_commands(sub)  # files, jobs: HTTP client commands against any server
    add_sweep_commands(sub)  # sweeps: the same, for replay sweeps and their reports

    p = sub.add_parser(
        "serve",
        help="API + a training and a files worker + the model-serving process; embedded SQLite "
        "and broker by default",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--demo", action="store_true", help="register demo data for team 'default'")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="training processes (file validation has a worker of its own beside them)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("api", help="run the HTTP API only")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "inference",
        help="run the model-serving process (completions); address from REPLAYFT_INFERENCE_URL",
    )
    p.add_argument("--host", default=None, help="default: the host of REPLAYFT_INFERENCE_URL")
    p.add_argument("--port", type=int, default=None, help="default: its port")
    p.set_defaults(func=cmd_inference)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--queues", default="training,files", help="comma-separated: training,files")
    p.add_argument("--concurrency", type=int, default=1, help="processes (1 per GPU)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "maintenance",
        help="run the periodic checks (outbox relay, state sweep, lost-job check) without a worker",
    )
    p.set_defaults(func=cmd_maintenance)

    p = sub.add_parser("db", help="database schema")
    db = p.add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("keys", help="API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("create", help="create a key (and the team if needed); prints the key")
    p.add_argument("--team", required=True)
    p.add_argument("--admin", action="store_true")
    p.add_argument("--name", default=None, help="a label to tell keys apart")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="list keys: id, team, prefix, admin, dates (no secrets)")
    p.add_argument("--team", default=None, help="only this team's keys")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key: its next request gets 401")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_revoke)
    p = keys.add_parser(
        "rotate", help="revoke a key and print a new one for the same team and admin flag"
    )
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_rotate)

    p = sub.add_parser("corpora", help="server-side replay corpora")
    corpora = p.add_subparsers(dest="corpora_command", required=True)
    p = corpora.add_parser("add", help="register files as a corpus usable as replay.dataset")
    p.add_argument("name")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_corpora_add)

    p = sub.add_parser("models", help="server-side base models")
    models = p.add_subparsers(dest="models_command", required=True)
    p = models.add_parser("add", help="register a model folder or .gguf file as a base model")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--gguf-file", default=None)
    p.set_defaults(func=cmd_models_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command in ENGINE_COMMANDS:
        return engine_cli.main(argv)  # its own error handling and progress output
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        _err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
