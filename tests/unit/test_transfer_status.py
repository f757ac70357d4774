"""A transfer's status: the enum the code writes and the names the APIs show are one set."""

from __future__ import annotations

from typing import get_args

from services.routing.models import TransferStatus, TransferStatusName


def test_the_api_names_every_transfer_status_and_no_other() -> None:
    assert set(get_args(TransferStatusName)) == {status.value for status in TransferStatus}


def test_a_status_is_stored_and_compared_as_its_plain_string() -> None:
    # The column is a String: rows read back are plain str, which must equal the members.
    assert TransferStatus.DEAD_LETTERED == "dead_lettered"
    assert str(TransferStatus.SUPPLEMENT_REQUESTED) == "supplement_requested"
