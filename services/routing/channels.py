"""How a transfer reaches an agency: one interface, one implementation per channel.

The delivery worker owns the retry loop, leases and bookkeeping; a channel only sends one
transfer and says what happened. Every channel signs what it sends with the agency's
Standard Webhooks secret, the transfer id as the message id (stable across retries).

- https: POST JSON to the agency's URL. A 2xx is transport only; the agency acknowledges
  with POST /v1/transfers/{id}/acknowledgement.
- grpc: AgencyInbox.ReceiveTransfer; the returned TransferReceipt is the acknowledgement.
- kafka: a record on the agency's own inbox topic (CloudEvents binary mode, keyed by the
  dossier code, trace context in `traceparent`); the agency acknowledges over HTTP.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

import aiohttp
import grpc
from google.protobuf.json_format import MessageToDict

from core.catalogue import Agency
from core.clock import SYSTEM_CLOCK, Clock
from core.grpc import traced_channel
from core.kafka import EventProducer, OutboundRecord
from core.retry import retryable_grpc, retryable_http
from core.signing import signature_headers
from core.telemetry import current_carrier
from gateway.v1 import agency_pb2

SOURCE = "/gateway/routing"
TRANSFER_TYPE = "vn.gov.agency.transfer.v1"
RECEIVE_TRANSFER = "/gateway.v1.AgencyInbox/ReceiveTransfer"


@dataclass
class Sent:
    """What one attempt achieved: nothing (error), transport (a 2xx), or an acknowledgement."""

    error: str | None = None
    retryable: bool = True
    acknowledged: bool = False


class NotConfigured(Exception):
    """The agency's catalogue entry cannot be used as it is (say, no signing secret)."""


class Channel(Protocol):
    async def send(self, agency: Agency, transfer: agency_pb2.Transfer) -> Sent: ...


def transfer_json(transfer: agency_pb2.Transfer) -> dict[str, object]:
    """The HTTPS body: the transfer with the dossier as JSON (proto field names)."""
    return {
        "transfer_id": transfer.transfer_id,
        "dossier": MessageToDict(transfer.dossier, preserving_proto_field_name=True),
        "step": {
            "index": transfer.step.index,
            "name": transfer.step.name,
            "agency_code": transfer.step.agency_code,
            "due_at": transfer.step.due_at.ToDatetime(tzinfo=UTC).isoformat(),
        },
        "outcome_url": transfer.outcome_url,
        "acknowledgement_url": transfer.acknowledgement_url,
        "delivery_id": delivery_id(transfer),
    }


def delivery_id(transfer: agency_pb2.Transfer) -> str:
    # A transfer built without one (tests, older callers) is its first delivery.
    return transfer.delivery_id or transfer.transfer_id


def signed(agency: Agency, transfer_id: str, body: bytes, binary: bool = False) -> dict[str, str]:
    """Standard Webhooks headers; a binary body (protobuf) is signed as its base64 text,
    since the scheme and its libraries sign text."""
    if not agency.secret:
        raise NotConfigured(f"agency {agency.code} has no signing secret configured")
    return signature_headers(agency.secret, transfer_id, base64.b64encode(body) if binary else body)


class HttpsChannel:
    def __init__(self, client: aiohttp.ClientSession) -> None:
        self._client = client

    async def send(self, agency: Agency, transfer: agency_pb2.Transfer) -> Sent:
        body = json.dumps(transfer_json(transfer), ensure_ascii=False).encode()
        headers = signed(agency, delivery_id(transfer), body) | {
            "Idempotency-Key": delivery_id(transfer),
            "Content-Type": "application/json",
        }
        try:
            async with self._client.post(agency.url, data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Sent(error=f"{type(exc).__name__}: {exc}")
        if not 200 <= response.status < 300:
            return Sent(
                error=f"HTTP {response.status}",
                retryable=retryable_http(response.status),
            )
        return Sent()


class GrpcChannel:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def send(self, agency: Agency, transfer: agency_pb2.Transfer) -> Sent:
        # The signed bytes are the bytes sent: a map in the dossier (form_data) need not
        # serialise the same way twice, so the message is not left to the stub to encode.
        body = transfer.SerializeToString()
        metadata = signed(agency, delivery_id(transfer), body, binary=True)
        channel = self._channels.get(agency.target)
        if channel is None:
            channel = self._channels[agency.target] = traced_channel(agency.target)
        receive: grpc.aio.UnaryUnaryMultiCallable[bytes, agency_pb2.TransferReceipt]
        receive = channel.unary_unary(
            RECEIVE_TRANSFER, response_deserializer=agency_pb2.TransferReceipt.FromString
        )
        try:
            receipt = await receive(body, timeout=self._timeout_s, metadata=tuple(metadata.items()))
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            error = f"gRPC {code.name}: {exc.details()}"
            return Sent(error=error, retryable=retryable_grpc(code))
        if receipt.transfer_id != transfer.transfer_id:
            return Sent(error=f"receipt for another transfer {receipt.transfer_id!r}")
        return Sent(acknowledged=True)


class KafkaChannel:
    def __init__(self, producer: EventProducer, clock: Clock = SYSTEM_CLOCK) -> None:
        self._producer = producer
        self._clock = clock

    async def send(self, agency: Agency, transfer: agency_pb2.Transfer) -> Sent:
        value = transfer.SerializeToString()
        headers = {
            "ce_specversion": "1.0",
            # The transfer id as the event id: a re-delivery is the same event to the agency.
            "ce_id": delivery_id(transfer),
            "ce_source": SOURCE,
            "ce_type": TRANSFER_TYPE,
            "ce_subject": transfer.dossier.code,
            "ce_time": self._clock.now().isoformat(),
            "content-type": "application/protobuf",
        } | signed(agency, delivery_id(transfer), value, binary=True)
        record = OutboundRecord(
            topic=agency.target,
            key=transfer.dossier.code.encode(),
            value=value,
            headers={k: v.encode() for k, v in headers.items()},
            trace_carrier=current_carrier(),
        )
        try:
            await self._producer.send_batch([record])
        except Exception as exc:  # KafkaError, or the producer not connected yet
            return Sent(error=f"Kafka {type(exc).__name__}: {exc}")
        return Sent()
