"""Replicas of the gateway's services in the local stack: the process names and the gRPC
targets that reach every replica.

The second replica of intake is the process "intake-2" (the first keeps the plain name, so
a one-replica stack looks as it always did). Replicas share the one PostgreSQL database
and Kafka's consumer groups; each listens on its own ports. Callers of a gRPC service get
every replica in one target and spread their calls (core/grpc.py, round_robin); HTTP
callers outside the stack pick a replica themselves, as a load balancer would.
"""

from __future__ import annotations

# The services that may run as several processes; the sandbox and the console stay single.
REPLICATED = ("intake", "identity", "routing", "notify")


def process_name(service: str, replica: int) -> str:
    return service if replica == 1 else f"{service}-{replica}"


def split_name(name: str) -> tuple[str, int]:
    """("intake", 2) for "intake-2"; ("intake", 1) for "intake"."""
    service, _, replica = name.rpartition("-")
    if service in REPLICATED and replica.isdigit():
        return service, int(replica)
    return name, 1


def grpc_target(host: str, ports: list[int]) -> str:
    """One replica: host:port. Several: gRPC's static list of addresses (name resolver
    "ipv4"), which a channel balances over."""
    if len(ports) == 1:
        return f"{host}:{ports[0]}"
    return "ipv4:" + ",".join(f"{host}:{port}" for port in ports)


def refuse_without_shared_database(replicas: int, database_url: str | None) -> None:
    if replicas > 1 and database_url is None:
        raise ValueError(
            "replicas of a service share one database: run them on PostgreSQL "
            "(DATABASE_URL); each SQLite file belongs to one process"
        )
