"""A throw-away PostgreSQL server for local runs and tests, from the distribution's binaries.

    python -m devstack.postgres [--port N] [--data-dir D] [--fast]

It runs durable (DURABLE_SETTINGS, as a deployment would) unless told --fast; the tests'
servers (ensure_postgres) run fast. If GATEWAY_TEST_DATABASE_URL is set, ensure_postgres()
uses that database instead.
"""

from __future__ import annotations

import argparse
import atexit
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from devstack._process import (
    Launched,
    die_with_parent,
    free_ports,
    log_tail,
    stop_process_group,
    temp_dir_path,
    wait_for_signal,
)

SUPERUSER = "gateway"
DEFAULT_DATABASE = "gateway"
TEST_DATABASE_URL_ENV = "GATEWAY_TEST_DATABASE_URL"
# initdb and postgres refuse to run as root; CI and the dev machines do run as root.
SERVICE_USER = "postgres"

_COMMON = {"listen_addresses": "127.0.0.1", "max_connections": "200"}
# For tests only: durability is traded for speed. Their data is rebuilt from scratch, so a
# crash losing the last commits costs nothing.
FAST_SETTINGS = {
    **_COMMON,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# What a deployment would run, for `make bench`: a commit is on disk before it is answered.
# commit_delay/commit_siblings are the fair lever (group commit: one WAL flush for the
# commits of several sessions); PostgreSQL's defaults here, `make bench` may pull it.
DURABLE_SETTINGS = {
    **_COMMON,
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "commit_delay": "0",
    "commit_siblings": "5",
}
# What the bench prints in its header, read back from the running server.
REPORTED_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "commit_delay",
    "commit_siblings",
)


class PostgresError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The server binaries: pg_config's bindir, else the newest /usr/lib/postgresql/N/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    # Debian's pg_config may come from libpq-dev of another major without a server in it.
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise PostgresError("no PostgreSQL server binaries found; run deploy/postgres/install.sh")


class PostgresServer(Launched):
    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        bindir: Path | None = None,
        settings: Mapping[str, str] = FAST_SETTINGS,
    ) -> None:
        self.settings = dict(settings)
        self.port = port if port is not None else free_ports(1)[0]
        self._owns_data_dir = data_dir is None
        # A temp dir is only named here and made by start(), so an unstarted server
        # leaves nothing on disk.
        self.data_dir = data_dir if data_dir is not None else temp_dir_path("devstack-postgres-")
        self._bindir = bindir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = DEFAULT_DATABASE) -> str:
        """The same address in libpq form, for asyncpg/psql (no SQLAlchemy driver suffix)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        """Start the server, create the default database; on failure clean up, raise."""
        if self.is_running():
            return
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        bindir = self._bindir = self._bindir or find_bindir()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        user = self._drop_to()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bindir, user)
        self._log = self.log_path.open("ab")
        settings = {**self.settings, "port": str(self.port)}
        # The socket lives in the data dir: /var/run/postgresql may not exist or be
        # writable, and two servers on one machine must not collide there.
        settings["unix_socket_directories"] = str(self.data_dir)
        command = [str(bindir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        # postgres runs in the foreground as our own child (not via pg_ctl, which
        # daemonizes) so stop() and the parent-death signal reach the postmaster itself.
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
            env=self._env(user),
            preexec_fn=die_with_parent(signal.SIGINT),
        )
        self._wait_ready(bindir, timeout)
        self.create_database(DEFAULT_DATABASE)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._proc is not None:
            # SIGINT is postgres' "fast" shutdown: it rolls back open sessions instead of
            # waiting for pooled connections a test forgot to close (SIGTERM would wait).
            stop_process_group(self._proc, signal.SIGINT, grace=20.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def create_database(self, name: str) -> None:
        """Create database `name` unless it already exists."""
        # psql rather than asyncpg: no event loop to borrow, and :'name' / %I quote it.
        script = (
            "select format('create database %I', :'name') "
            "where not exists (select 1 from pg_database where datname = :'name') \\gexec\n"
        )
        try:
            self._psql(["-v", f"name={name}"], script)
        except PostgresError as exc:
            raise PostgresError(f"creating database {name!r} failed: {exc}") from None

    def show(self, names: tuple[str, ...] = REPORTED_SETTINGS) -> dict[str, str]:
        """The running server's own word on `names` (SHOW), not what we asked it for."""
        script = "".join(f"SHOW {name};\n" for name in names)
        result = self._psql(["-A", "-t"], script)
        values = [line for line in result.splitlines() if line.strip()]
        return dict(zip(names, values, strict=True))

    def _psql(self, options: list[str], script: str) -> str:
        bindir = self._bindir or find_bindir()
        command = [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *options]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
        result = subprocess.run(command, input=script, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def _wait_ready(self, bindir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        probe += ["-U", SUPERUSER, "-d", "postgres"]
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise PostgresError(self._failure(f"postgres exited with code {code}"))
            if subprocess.run(probe, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError(self._failure(f"postgres not ready after {timeout:.0f} s"))
            time.sleep(0.1)

    def _initdb(self, bindir: Path, user: str | None) -> None:
        base = [str(bindir / "initdb"), "-D", str(self.pgdata), "--auth=trust"]
        base += [f"--username={SUPERUSER}", "-E", "UTF8", "--no-instructions", "--no-sync"]
        output = ""
        # C.UTF-8 sorts like C but keeps UTF-8 classification; some images lack it.
        for locale in ("C.UTF-8", "C"):
            shutil.rmtree(self.pgdata, ignore_errors=True)
            result = subprocess.run(
                [*base, f"--locale={locale}"],
                capture_output=True,
                text=True,
                check=False,
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
                env=self._env(user),
            )
            if result.returncode == 0:
                return
            output += result.stdout + result.stderr
        raise PostgresError(f"initdb failed in {self.pgdata}:\n{output[-4000:]}")

    @staticmethod
    def _drop_to() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise PostgresError(
                f"running as root and there is no {SERVICE_USER!r} user to run postgres as "
                "(installing the postgresql package creates it)"
            ) from None
        return SERVICE_USER

    @staticmethod
    def _env(user: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if user is not None:
            # initdb reads $HOME-relative files and would complain about root's.
            env["HOME"] = pwd.getpwnam(user).pw_dir
            env["USER"] = env["LOGNAME"] = user
        # An inherited locale the image lacks makes initdb fail before --locale applies.
        env["LC_ALL"] = "C"
        return env


_shared: PostgresServer | None = None


def ensure_postgres(database: str = DEFAULT_DATABASE) -> str:
    """A SQLAlchemy URL of a usable database: GATEWAY_TEST_DATABASE_URL, or a started server.

    The started server is shared by later calls and stopped when the interpreter exits.
    """
    global _shared
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        return external
    if _shared is None or not _shared.is_running():
        _shared = PostgresServer()
        _shared.start()
    if database != DEFAULT_DATABASE:
        _shared.create_database(database)
    return _shared.url(database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.postgres", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: free)")
    parser.add_argument("--data-dir", type=Path, default=None, help="kept across runs if set")
    parser.add_argument(
        "--fast", action="store_true", help="fsync and synchronous commit off, as for tests"
    )
    args = parser.parse_args(argv)
    settings = FAST_SETTINGS if args.fast else DURABLE_SETTINGS
    server = PostgresServer(args.data_dir, args.port, settings=settings)
    try:
        server.start()
    except PostgresError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"DATABASE_URL={server.url()}", flush=True)
    try:
        code = wait_for_signal(server.is_running)
        if code:
            print(f"postgres died:\n{log_tail(server.log_path)}", file=sys.stderr)
        return code
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
