"""`make run`: the whole local stack in one terminal, no Docker. Ctrl-C stops everything."""

from __future__ import annotations

import os
import sys

from devstack._process import wait_for_signal
from devstack.jaeger import Jaeger, JaegerPorts, binary_path
from devstack.kafka import KafkaBroker
from devstack.stack import AGENCY_INBOX_TOPICS, HOST, REPO, Ports, Stack

TOPIC = os.environ.get("DOSSIER_EVENTS_TOPIC", "dossier.events")
PICK_JSON_FIELD = """python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])'"""


# Set by an operator who exports to a collector of their own: `make run` then starts no Jaeger.
OPERATOR_OTLP = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
)


def banner(stack: Stack, broker: KafkaBroker, jaeger: Jaeger | None) -> str:
    p = stack.ports
    database = stack.database_url or f"SQLite files in {stack.var_dir}/"
    desk = stack.credentials.clients["motcua-h22"]
    inboxes = ", ".join(AGENCY_INBOX_TOPICS)
    # The sandbox's, unless EID_ISSUER in the environment names another provider.
    provider = stack.service_env("identity")["EID_ISSUER"]
    return f"""
Dossier gateway is running.
  intake     {stack.url("intake")}   OpenAPI: {stack.url("intake")}/docs
  routing    {stack.url("routing")}   gRPC {HOST}:{p.routing_grpc}
  notify     {stack.url("notify")}
  identity   {stack.url("identity")}   gRPC {HOST}:{p.identity_grpc}
  console    {stack.url("console")}   operators' web console (log in as canbo.vanhanh)
  Kafka      {broker.bootstrap_servers}   topics {TOPIC}, {TOPIC}.dlq
  database   {database}
  sandbox    agencies {stack.url("sandbox")}/agencies   SMTP {HOST}:{p.sandbox_smtp}
             mailbox {stack.url("sandbox")}/mail/messages
             national portal {stack.url("sandbox")}/portal/dossiers
             agency inboxes gRPC {HOST}:{p.sandbox_agency_grpc}, Kafka {inboxes}
             e-ID {stack.url("sandbox")}/oidc   registry gRPC {HOST}:{p.sandbox_registry_grpc}
  e-ID login {stack.url("identity")}/v1/citizen/login (in a browser), provider {provider}
  traces     {traces_line(stack, jaeger)}
  logs       {stack.var_dir}/log/
  tokens     {stack.url("identity")}/oauth2/token
             demo agency credentials in {stack.credentials.file}

Get a token for the one-stop desk, then submit a first dossier (see the README):
  TOKEN=$(curl -s {stack.url("identity")}/oauth2/token -u "motcua-h22:{desk.secret}" \\
    -d grant_type=client_credentials | {PICK_JSON_FIELD} access_token)
  curl -s -X POST {stack.url("intake")}/v1/dossiers -H 'Content-Type: application/json' \\
    -H "Authorization: Bearer $TOKEN" -d @docs/examples/birth-residence-insurance.json

Ctrl-C stops everything.
"""


def traces_line(stack: Stack, jaeger: Jaeger | None) -> str:
    if jaeger is None:
        return "exported as the OTEL_* environment says (no Jaeger started)"
    p = jaeger.ports
    return (
        f"Jaeger UI {jaeger.ui_url}   OTLP gRPC {HOST}:{p.otlp_grpc}, HTTP {HOST}:{p.otlp_http}\n"
        f"             a dossier's trace: trace_url in {stack.url('routing')}"
        "/v1/dossiers/{code}/journey"
    )


def trace_ui() -> Jaeger | None:
    """Jaeger for the services' traces, unless the operator exports elsewhere or it was not
    built (`make run` builds it; `python -m devstack.run` alone may not have)."""
    if any(name in os.environ for name in OPERATOR_OTLP):
        return None
    if not binary_path().exists():
        print(f"No Jaeger at {binary_path()} (make jaeger): traces are not exported.")
        return None
    return Jaeger(JaegerPorts.configured(), log_dir=REPO / "var" / "log")


def main() -> int:
    var_dir = REPO / "var"
    jaeger = trace_ui()
    tracing = {} if jaeger is None else jaeger.exporter_env()
    broker = KafkaBroker(
        data_dir=var_dir / "kafka",
        port=int(os.environ.get("KAFKA_PORT", "9092")),
        controller_port=int(os.environ.get("KAFKA_CONTROLLER_PORT", "9093")),
    )
    stack = Stack(
        kafka_bootstrap=broker.bootstrap_servers,
        var_dir=var_dir,
        ports=Ports(),
        database_url=os.environ.get("DATABASE_URL"),
        env={"DOSSIER_EVENTS_TOPIC": TOPIC, **tracing},
        # Routing links each dossier's journey to its trace page in the UI.
        env_by_service={}
        if jaeger is None
        else {"routing": {"TRACE_UI_URL": jaeger.trace_url_template}},
    )
    try:
        if jaeger is not None:
            print(f"Starting Jaeger (traces UI at {jaeger.ui_url})...", flush=True)
            jaeger.start()
        print("Starting Apache Kafka (KRaft, one node)...", flush=True)
        broker.start()
        broker.create_topics([TOPIC, TOPIC + ".dlq", *AGENCY_INBOX_TOPICS])
        print("Starting the services and the sandbox...", flush=True)
        stack.start()
        print(banner(stack, broker, jaeger), flush=True)
        code = wait_for_signal(
            lambda: (
                stack.running() and broker.is_running() and (jaeger is None or jaeger.is_running())
            )
        )
        if code:
            dead = [s for s, p in stack.processes.items() if p.poll() is not None]
            dead += [] if broker.is_running() else ["kafka"]
            dead += [] if jaeger is None or jaeger.is_running() else ["jaeger"]
            print(f"Stopped because {dead} exited; see {var_dir}/log/", file=sys.stderr)
        return code
    finally:
        print("Stopping...", flush=True)
        stack.stop()
        broker.stop()
        if jaeger is not None:
            jaeger.stop()


if __name__ == "__main__":
    sys.exit(main())
