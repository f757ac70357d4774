"""`make run`: the whole local stack in one terminal, no Docker. Ctrl-C stops everything."""

from __future__ import annotations

import os
import sys

from devstack._process import wait_for_signal
from devstack.kafka import KafkaBroker
from devstack.stack import AGENCY_INBOX_TOPICS, HOST, REPO, Ports, Stack
from devstack.zipkin import Zipkin, configured_port, jar_path, wanted

TOPIC = os.environ.get("DOSSIER_EVENTS_TOPIC", "dossier.events")
PICK_JSON_FIELD = """python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])'"""


def banner(stack: Stack, broker: KafkaBroker, zipkin: Zipkin | None) -> str:
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
  traces     {traces_line(stack, zipkin)}
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


def traces_line(stack: Stack, zipkin: Zipkin | None) -> str:
    if zipkin is None:
        return "exported as the OTEL_* environment says (no Zipkin started)"
    return (
        f"Zipkin UI {zipkin.ui_url}   spans in at {zipkin.spans_endpoint}\n"
        "             a dossier's trace: the console's dossier page, `gateway dossier CODE`,\n"
        f"             or trace_url in {stack.url('routing')}/v1/dossiers/{{code}}/journey"
    )


def trace_ui() -> Zipkin | None:
    """Zipkin for the services' traces, unless the operator's OTEL_* send them elsewhere or
    its jar was not fetched (`make run` fetches it; `python -m devstack.run` alone may not)."""
    if not wanted():
        return None
    if not jar_path().is_file():
        print(f"No Zipkin at {jar_path()} (make zipkin-jar): traces are not exported.")
        return None
    return Zipkin(configured_port(), log_dir=REPO / "var" / "log")


def main() -> int:
    var_dir = REPO / "var"
    zipkin = trace_ui()
    tracing = {} if zipkin is None else zipkin.exporter_env()
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
        # Routing links each dossier's journey to its trace page in the UI, unless the
        # operator names a trace UI of their own.
        env_by_service={}
        if zipkin is None or "TRACE_UI_URL" in os.environ
        else {"routing": {"TRACE_UI_URL": zipkin.trace_url_template}},
    )
    try:
        if zipkin is not None:
            print(f"Starting Zipkin (trace UI at {zipkin.ui_url})...", flush=True)
            zipkin.start()
        print("Starting Apache Kafka (KRaft, one node)...", flush=True)
        broker.start()
        broker.create_topics([TOPIC, TOPIC + ".dlq", *AGENCY_INBOX_TOPICS])
        print("Starting the services and the sandbox...", flush=True)
        stack.start()
        print(banner(stack, broker, zipkin), flush=True)
        code = wait_for_signal(
            lambda: (
                stack.running() and broker.is_running() and (zipkin is None or zipkin.is_running())
            )
        )
        if code:
            dead = [s for s, p in stack.processes.items() if p.poll() is not None]
            dead += [] if broker.is_running() else ["kafka"]
            dead += [] if zipkin is None or zipkin.is_running() else ["zipkin"]
            print(f"Stopped because {dead} exited; see {var_dir}/log/", file=sys.stderr)
        return code
    finally:
        print("Stopping...", flush=True)
        stack.stop()
        broker.stop()
        if zipkin is not None:
            zipkin.stop()


if __name__ == "__main__":
    sys.exit(main())
