"""The demo agencies' other doors: an AgencyInbox gRPC server and a Kafka inbox consumer.

Both hand what they get to the same AgencyOffice as the HTTPS endpoint, after checking the
Standard Webhooks signature (gRPC metadata, Kafka headers) over the base64 text of the exact
bytes received: the scheme signs text, a serialised Transfer is binary.
Over gRPC the TransferReceipt is the acknowledgement; from Kafka the agency acknowledges
through the gateway's HTTP acknowledgement URL carried in the transfer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.v1 import agency_pb2
from sandbox.agency import AgencyOffice, SignatureRefused, TransferIn

log = logging.getLogger("sandbox.agency")
SERVICE = "gateway.v1.AgencyInbox"


def transfer_in(transfer: agency_pb2.Transfer) -> TransferIn:
    return TransferIn.model_validate(
        {
            "transfer_id": transfer.transfer_id,
            "dossier": MessageToDict(transfer.dossier, preserving_proto_field_name=True),
            "step": {
                "index": transfer.step.index,
                "name": transfer.step.name,
                "agency_code": transfer.step.agency_code,
            },
            "outcome_url": transfer.outcome_url,
            "acknowledgement_url": transfer.acknowledgement_url,
        }
    )


class AgencyInboxServer:
    """AgencyInbox.ReceiveTransfer, registered by hand to see the request's raw bytes."""

    def __init__(self, office: AgencyOffice) -> None:
        self._office = office
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        server = grpc.aio.server()
        handler: grpc.RpcMethodHandler[bytes, agency_pb2.TransferReceipt]
        handler = grpc.unary_unary_rpc_method_handler(
            self._receive, response_serializer=agency_pb2.TransferReceipt.SerializeToString
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"ReceiveTransfer": handler})]
        )
        self.port = server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        await server.start()
        self._server = server
        log.info("agency inbox (gRPC) listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None

    async def _receive(
        self, raw: bytes, context: grpc.aio.ServicerContext[bytes, agency_pb2.TransferReceipt]
    ) -> agency_pb2.TransferReceipt:
        headers = {k: str(v) for k, v in context.invocation_metadata() or ()}
        try:
            verified = self._office.verify(base64.b64encode(raw), headers)
            transfer = agency_pb2.Transfer.FromString(raw)
            body = transfer_in(transfer)
        except SignatureRefused as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"bad signature: {exc}")
            raise  # abort() raises; this satisfies the type checker
        except (DecodeError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        agency_code = transfer.step.agency_code
        taken = self._office.take(
            agency_code, transfer.transfer_id, body, "grpc", verified, headers
        )
        if taken.status == "failing":
            code = (
                grpc.StatusCode.UNAVAILABLE
                if taken.fail_status >= 500 or taken.fail_status == 429
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, f"agency {agency_code} is failing on purpose")
        # The receipt is the acknowledgement.
        self._office.acknowledged(agency_code, transfer.transfer_id)
        record = self._office.record_of(agency_code, transfer.transfer_id)
        assert record is not None
        received = Timestamp()
        received.FromJsonString(record.first_received_at.replace("+00:00", "Z"))
        return agency_pb2.TransferReceipt(
            transfer_id=transfer.transfer_id,
            received_at=received,
            duplicate=taken.status == "duplicate",
        )


class KafkaInbox:
    """Consumes the inbox topics of the Kafka-channel agencies, as their back-office would."""

    def __init__(self, office: AgencyOffice, bootstrap_servers: str, topics: list[str]) -> None:
        self._office = office
        self._bootstrap_servers = bootstrap_servers
        self._topics = topics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka inbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:  # Kafka may not be up yet: keep trying, as a real consumer would
            consumer = AIOKafkaConsumer(
                *self._topics,
                bootstrap_servers=self._bootstrap_servers,
                group_id="sandbox-agency-inbox",
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                log.info("agency inbox (Kafka) consuming %s", ", ".join(self._topics))
                while True:
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        for record in records:
                            self._take(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("agency inbox (Kafka): %r; retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                # Leaving the group needs the broker: without one, stop must not hang for ever.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(consumer.stop(), timeout=5.0)

    def _take(self, record: Any) -> None:
        headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
        try:
            verified = self._office.verify(base64.b64encode(record.value or b""), headers)
            transfer = agency_pb2.Transfer.FromString(record.value or b"")
            body = transfer_in(transfer)
        except (SignatureRefused, DecodeError, ValueError) as exc:
            # A real agency would park it for its operators; the sandbox just says so.
            log.warning("inbox record %s@%s refused: %s", record.topic, record.offset, exc)
            return
        agency_code, transfer_id = transfer.step.agency_code, transfer.transfer_id
        self._office.take(agency_code, transfer_id, body, "kafka", verified, headers)
