"""The local stack: Kafka, the services, the operators' console and the sandbox stand-ins as
real processes.

`make run` uses it with the default ports; the integration tests use it with free ports,
PostgreSQL and an OTLP receiver, and kill or restart single services through it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from joserfc.jwk import RSAKey

from core.signing import new_secret
from devstack._process import free_ports, log_tail
from devstack.credentials import DemoCredentials
from devstack.replicas import (
    REPLICATED,
    grpc_target,
    process_name,
    refuse_without_shared_database,
    split_name,
)

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The gateway's client at the e-ID provider (the sandbox's, locally).
EID_CLIENT_ID = "dossier-gateway"
# The operators' console and its client at the officials' provider (the sandbox's, locally).
CONSOLE_OIDC_CLIENT_ID = "operator-console"
SERVICES = ("sandbox", "identity", "routing", "notify", "intake", "console")
# Inbox topics of the demo agencies on the Kafka channel (catalogue/agencies.yaml).
AGENCY_INBOX_TOPICS = ("agency.000.00.15.H22.inbox",)


@dataclass(frozen=True)
class Ports:
    intake: int = 8080
    routing: int = 8081
    routing_grpc: int = 50051
    notify: int = 8082
    identity: int = 8083
    identity_grpc: int = 50052
    sandbox: int = 8090
    sandbox_smtp: int = 2525
    # The population registry stand-in (gRPC) and agencies that take transfers over gRPC.
    sandbox_registry_grpc: int = 50053
    sandbox_agency_grpc: int = 50054
    console: int = 8084

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(11))


@dataclass
class Stack:
    kafka_bootstrap: str
    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    # None: each service gets its own SQLite file under var_dir (the embedded default).
    database_url: str | None = None
    # Extra environment for every process (OTEL_*, tuning for tests...).
    env: Mapping[str, str] = field(default_factory=dict)
    # Per service, over `env` (e.g. one service exporting by another OTLP transport).
    env_by_service: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Demo agency credentials, generated into var_dir/credentials on first use.
    _credentials: DemoCredentials | None = None
    # Ports of the second and later replicas of intake, identity, routing and notify (their
    # service ports only); none: one process each (devstack/replicas.py).
    replica_ports: tuple[Ports, ...] = ()

    def __post_init__(self) -> None:
        refuse_without_shared_database(1 + len(self.replica_ports), self.database_url)

    @property
    def credentials(self) -> DemoCredentials:
        if self._credentials is None:
            self._credentials = DemoCredentials.seed(self.var_dir / "credentials")
        return self._credentials

    # Signing secret of the demo agencies, fresh for every stack: never written to disk.
    agency_secret: str = field(default_factory=new_secret)

    def names(self, service: str) -> list[str]:
        """The processes of a service: "intake", "intake-2"..."""
        count = 1 + len(self.replica_ports) if service in REPLICATED else 1
        return [process_name(service, replica) for replica in range(1, count + 1)]

    def ports_of(self, replica: int) -> Ports:
        return (self.ports, *self.replica_ports)[replica - 1]

    def urls(self, service: str) -> list[str]:
        """The base URL of every replica of a service."""
        return [self.url(*split_name(name)) for name in self.names(service)]

    def grpc_target(self, service: str) -> str:
        """Every replica of identity's or routing's gRPC server, as one channel target."""
        ports = [
            getattr(self.ports_of(split_name(name)[1]), f"{service}_grpc")
            for name in self.names(service)
        ]
        return grpc_target(HOST, ports)

    def url(self, service: str, replica: int = 1) -> str:
        """A replica's base URL; the first replica's is the stack's public address (a load
        balancer's, in production), which links and callbacks point at."""
        ports = self.ports_of(replica)
        port = {
            "intake": ports.intake,
            "routing": ports.routing,
            "notify": ports.notify,
            "identity": ports.identity,
            "sandbox": self.ports.sandbox,
            "console": self.ports.console,
        }[service]
        return f"http://{HOST}:{port}"

    def service_env(self, name: str) -> dict[str, str]:
        """The environment of one process: a service, or one replica of it ("intake-2")."""
        service, replica = split_name(name)
        p, own = self.ports, self.ports_of(replica)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url
            or f"sqlite+aiosqlite:///{self.var_dir / (service + '.db')}",
            "OTEL_SERVICE_NAME": service,
            "HTTP_HOST": HOST,
            "AUTH_ISSUER": self.url("identity"),
            **self.env,
        }
        env |= {
            "intake": {
                "HTTP_PORT": str(own.intake),
                "ROUTING_GRPC_TARGET": self.grpc_target("routing"),
                **self.credentials.client_env("gateway-intake"),
            },
            "routing": {
                "HTTP_PORT": str(own.routing),
                "GRPC_PORT": str(own.routing_grpc),
                "PUBLIC_URL": self.url("routing"),
                "DEMO_AGENCY_BASE_URL": self.url("sandbox"),
                "DEMO_AGENCY_SECRET": self.agency_secret,
                "DEMO_AGENCY_GRPC_TARGET": f"{HOST}:{p.sandbox_agency_grpc}",
                "PORTAL_SYNC_URL": self.url("sandbox") + "/portal/dossiers",
            },
            "notify": {
                "HTTP_PORT": str(own.notify),
                "SMTP_HOST": HOST,
                "SMTP_PORT": str(p.sandbox_smtp),
                "SMS_ENABLED": "true",
                "SMS_GATEWAY_URL": self.url("sandbox") + "/sms/messages",
                "SMS_API_KEY": "sandbox-notify-key",
                # Callbacks may go to the sandbox's webhook receiver, and to no other local
                # address (core/outbound.py); their link points at intake.
                "OUTBOUND_ALLOW": self.url("sandbox") + "/webhooks/",
                "INTAKE_PUBLIC_URL": self.url("intake"),
                # The catalogue comes from routing, read with notify's own token.
                "ROUTING_GRPC_TARGET": self.grpc_target("routing"),
                **self.credentials.client_env("gateway-notify"),
            },
            "identity": {
                "HTTP_PORT": str(own.identity),
                "GRPC_PORT": str(own.identity_grpc),
                # The catalogue (which procedures need residence) comes from routing.
                "ROUTING_GRPC_TARGET": self.grpc_target("routing"),
                **self.credentials.identity_env(),
            },
            "sandbox": {
                "SANDBOX_HOST": HOST,
                "SANDBOX_HTTP_PORT": str(p.sandbox),
                "SANDBOX_SMTP_PORT": str(p.sandbox_smtp),
                "SANDBOX_REGISTRY_GRPC_PORT": str(p.sandbox_registry_grpc),
                "SANDBOX_AGENCY_GRPC_PORT": str(p.sandbox_agency_grpc),
                "SANDBOX_AGENCY_TOKEN_URL": self.url("identity") + "/oauth2/token",
                "SANDBOX_AGENCY_CLIENTS": self.credentials.sandbox_agencies(),
                "SANDBOX_AGENCY_SECRET": self.agency_secret,
                "SANDBOX_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                "SANDBOX_AGENCY_INBOX_TOPICS": ",".join(AGENCY_INBOX_TOPICS),
                # What the stand-ins took and still owe survives a kill, as in real systems.
                "SANDBOX_STATE_DIR": str(self.var_dir / "sandbox"),
                **self._console_sandbox_env(),
            },
            "console": self._console_env(),
        }[service]
        env |= self._eid_env(service, {**os.environ, **self.env})
        env |= self.env_by_service.get(service, {})
        return env

    def _eid_env(self, service: str, given: Mapping[str, str]) -> dict[str, str]:
        """Citizens' e-ID and the population registry: identity is the sandbox provider's
        relying party, intake asks identity. An EID_* variable already `given` (e.g.
        `EID_ISSUER=... make run`) wins; with another issuer, the sandbox's client id and
        key do not apply, so none of the sandbox client's settings are added."""
        p, credentials = self.ports, self._eid_dir()
        redirect_uri = self.url("identity") + "/v1/citizen/callback"
        sandbox_client = {
            "EID_ISSUER": self.url("sandbox") + "/oidc",
            "EID_CLIENT_ID": EID_CLIENT_ID,
            "EID_CLIENT_KEY_FILE": str(credentials / "client.jwk.json"),
        }
        eid = {"EID_REDIRECT_URI": redirect_uri}
        if "EID_ISSUER" not in given:
            eid |= sandbox_client
        return {
            "intake": {"IDENTITY_GRPC_TARGET": self.grpc_target("identity")},
            "identity": {
                **{name: value for name, value in eid.items() if name not in given},
                "REGISTRY_GRPC_TARGET": f"{HOST}:{p.sandbox_registry_grpc}",
                "PSEUDONYM_KEY": (credentials / "pseudonym.key").read_text().strip(),
            },
            "sandbox": {
                "SANDBOX_OIDC_CLIENT_ID": EID_CLIENT_ID,
                "SANDBOX_OIDC_REDIRECT_URIS": redirect_uri,
                "SANDBOX_OIDC_CLIENT_JWKS_FILE": str(credentials / "client.jwks.json"),
                # A login_hint logs that citizen in without the page: for tests and curl.
                "SANDBOX_OIDC_AUTO_LOGIN": "true",
            },
        }.get(service, {})

    def _console_env(self) -> dict[str, str]:
        """The console: officials log in at the sandbox's provider (its client secret and
        the session key made on first use, never committed), and it reads the services
        with its own client credentials (gateway-console)."""
        secrets_dir = self._console_dir()
        return {
            "HTTP_PORT": str(self.ports.console),
            "CONSOLE_PUBLIC_URL": self.url("console"),
            "CONSOLE_OIDC_ISSUER": self.url("sandbox") + "/oidc",
            "CONSOLE_OIDC_CLIENT_ID": CONSOLE_OIDC_CLIENT_ID,
            "CONSOLE_OIDC_CLIENT_SECRET": (secrets_dir / "oidc-client.secret").read_text(),
            "CONSOLE_SESSION_KEY": (secrets_dir / "session.key").read_text(),
            "CONSOLE_INTAKE_URL": self.url("intake"),
            "CONSOLE_ROUTING_URL": self.url("routing"),
            "CONSOLE_NOTIFY_URL": self.url("notify"),
            "CONSOLE_IDENTITY_URL": self.url("identity"),
            **self.credentials.client_env("gateway-console"),
        }

    def _console_sandbox_env(self) -> dict[str, str]:
        return {
            "SANDBOX_OIDC_CONSOLE_CLIENT_ID": CONSOLE_OIDC_CLIENT_ID,
            "SANDBOX_OIDC_CONSOLE_CLIENT_SECRET": (
                self._console_dir() / "oidc-client.secret"
            ).read_text(),
            "SANDBOX_OIDC_CONSOLE_REDIRECT_URIS": self.url("console") + "/auth/callback",
        }

    def _console_dir(self) -> Path:
        folder = self.var_dir / "console"
        if not (folder / "session.key").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("oidc-client.secret", "session.key"):
                (folder / name).touch(mode=0o600)
                (folder / name).write_text(secrets.token_urlsafe(48))
        return folder

    def _eid_dir(self) -> Path:
        """Credentials of this stack, made on first use and never committed: the e-ID
        client's key pair (private_key_jwt) and the key of access-log pseudonyms."""
        folder = self.var_dir / "eid"
        if not (folder / "pseudonym.key").exists():
            folder.mkdir(parents=True, exist_ok=True)
            key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"}, auto_kid=True)
            private = folder / "client.jwk.json"
            private.touch(mode=0o600)
            private.write_text(json.dumps(key.as_dict(private=True)))
            public = {"keys": [key.as_dict(private=False)]}
            (folder / "client.jwks.json").write_text(json.dumps(public))
            (folder / "pseudonym.key").touch(mode=0o600)
            (folder / "pseudonym.key").write_text(secrets.token_hex(32))
        return folder

    def start(self, timeout: float = 90) -> None:
        everyone = [name for service in SERVICES for name in self.names(service)]
        for name in everyone:
            self.start_service(name)
        for name in everyone:
            self.wait_ready(name, timeout)

    def start_service(self, name: str) -> None:
        """Start a service, or one replica of it by its process name ("intake-2")."""
        service = split_name(name)[0]
        module = "sandbox" if service == "sandbox" else f"services.{service}"
        log_dir = self.var_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        # Logs may name citizens' sessions and agencies: owner and group only.
        log_path = log_dir / f"{name}.log"
        with os.fdopen(
            os.open(log_path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o640), "ab"
        ) as log:
            log_path.chmod(0o640)
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO,
                env=self.service_env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the launcher only
                # No preexec_fn (e.g. to die with the launcher): it forces a plain fork,
                # and gRPC's fork handlers in a process that already uses gRPC abort the child.
            )

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}: {self.log_tail(name)}"
                )
            if self._ready(name):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout}s: {self.log_tail(name)}")

    def _ready(self, name: str) -> bool:
        service, replica = split_name(name)
        grpc_port = self.ports_of(replica).identity_grpc
        if service == "identity" and not self._grpc_serving(f"{HOST}:{grpc_port}"):
            return False
        path = "/health/live" if service == "sandbox" else "/health/ready"
        try:
            return httpx.get(self.url(service, replica) + path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def _grpc_serving(target: str) -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for service in reversed(SERVICES):
            for name in reversed(self.names(service)):
                self.stop_service(name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        return log_tail(self.var_dir / "log" / f"{name}.log", lines)

    def running(self) -> bool:
        return all(p.poll() is None for p in self.processes.values())
