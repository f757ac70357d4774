"""Agencies generate clients from the served OpenAPI documents: done here as an integrator
would, and the README's flow run through each client unmodified. Token, submit, the
idempotent replay (200, typed, with its headers), read until completed, and typed problems
for 401, 403, 404 and 422.

- Python: openapi-python-client (PyPI, pinned in constraints.txt) into a temporary folder.
- Java: OpenAPI Generator's CLI from Maven Central (deploy/openapi-generator/pom.xml, `make
  openapi-generator-jars`), its default `native` library (java.net.http.HttpClient, which
  offers h2c on http:// and must still be served), no interceptors; compiled with javac and
  driven by tests/integration/openapi_clients/ReadmeFlow.java.
"""

from __future__ import annotations

import base64
import importlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.stack import REPO, Stack

GENERATOR_LIBS = REPO / ".cache" / "openapi-generator" / "libs"
GENERATOR_JAR = GENERATOR_LIBS / "openapi-generator-cli-7.25.0.jar"
FLOW_JAVA = Path(__file__).with_name("openapi_clients") / "ReadmeFlow.java"
DESK = "motcua-h22"  # the one-stop desk of the README
READER_ONLY = "congan-tanphong"  # may read dossiers, not submit them
# The README's first dossier.
APPLICANT = {
    "personal_id": "001090012345",
    "full_name": "Nguyễn Thị Lan",
    "email": "lan@example.vn",
}
FORM = {
    "child_full_name": "Trần Minh Khôi",
    "child_birth_date": "2026-11-01",
    "child_gender": "Nam",
    "mother_full_name": "Nguyễn Thị Lan",
    "residence_address": "Số 12, thôn Đông, xã Tân Phong",
}
PROCEDURE = "LT.KS-TT-BHYT"


def generate_python(url: str, package: str, into: Path) -> ModuleType:
    """openapi-python-client's package for the document at `url`, imported."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            str(Path(sys.executable).with_name("openapi-python-client")),
            "generate",
            "--url",
            url,
            "--output-path",
            str(into / package),
            "--meta",
            "none",
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    return importlib.import_module(package)


def basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_the_readme_flow_through_a_generated_python_client(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    identity = generate_python(stack.url("identity") + "/openapi.json", "gw_identity", tmp_path)
    intake = generate_python(stack.url("intake") + "/openapi.json", "gw_intake", tmp_path)

    def token(client_id: str, scope: str) -> str:
        from gw_identity.api.agency_tokens import request_token
        from gw_identity.models import RequestTokenTokenRequest, TokenOut
        from gw_identity.models.request_token_token_request_grant_type import (
            RequestTokenTokenRequestGrantType as Grant,
        )

        secret = stack.credentials.clients[client_id].secret
        # client_secret_basic, as the document's security scheme says.
        client = identity.AuthenticatedClient(
            base_url=stack.url("identity"), token=basic(client_id, secret), prefix="Basic"
        )
        answer = request_token.sync(
            client=client,
            body=RequestTokenTokenRequest(grant_type=Grant.CLIENT_CREDENTIALS, scope=scope),
        )
        assert isinstance(answer, TokenOut), answer
        return answer.access_token

    from gw_intake.api.dossiers import get_dossier, submit_dossier
    from gw_intake.api.procedures import get_procedure
    from gw_intake.models import ApplicantIn, DossierIn, DossierInFormData, DossierOut, Problem
    from gw_intake.models.dossier_out_status import DossierOutStatus

    desk = intake.AuthenticatedClient(
        base_url=stack.url("intake"), token=token(DESK, "dossiers:submit dossiers:read")
    )
    # The procedure's published form says what form_data must carry.
    procedure = get_procedure.sync(
        client=intake.Client(base_url=stack.url("intake")), procedure_code=PROCEDURE
    )
    assert procedure is not None
    assert not isinstance(procedure, Problem), procedure
    assert set(procedure.form_schema["required"]) == set(FORM)

    body = DossierIn(
        procedure_code=PROCEDURE,
        applicant=ApplicantIn.from_dict(APPLICANT),
        form_data=DossierInFormData.from_dict(FORM),
    )
    key = f"python-client-{uuid.uuid4()}"
    first = submit_dossier.sync_detailed(client=desk, body=body, idempotency_key=key)
    assert first.status_code == 201, first.content
    assert isinstance(first.parsed, DossierOut)
    code = first.parsed.code
    assert first.headers["location"] == f"/v1/dossiers/{code}"

    replay = submit_dossier.sync_detailed(client=desk, body=body, idempotency_key=key)
    assert replay.status_code == 200, replay.content
    assert isinstance(replay.parsed, DossierOut)
    assert replay.parsed.code == code
    assert replay.headers["idempotent-replayed"] == "true"

    deadline = time.monotonic() + 90
    while True:
        read = get_dossier.sync(client=desk, code=code)
        assert isinstance(read, DossierOut), read
        if read.status == DossierOutStatus.COMPLETED or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert read.status == DossierOutStatus.COMPLETED
    assert all(step.status.value == "completed" for step in read.steps)

    # Typed problems, not raw strings or empty classes.
    forged = intake.AuthenticatedClient(base_url=stack.url("intake"), token="not-a-token")
    problems: dict[int, Any] = {
        401: get_dossier.sync(client=forged, code=code),
        403: submit_dossier.sync(
            client=intake.AuthenticatedClient(
                base_url=stack.url("intake"), token=token(READER_ONLY, "dossiers:read")
            ),
            body=body,
        ),
        404: get_dossier.sync(client=desk, code="000.00.01.H22-000101-9999"),
        422: submit_dossier.sync(
            client=desk,
            body=DossierIn(
                procedure_code=PROCEDURE,
                applicant=ApplicantIn.from_dict(APPLICANT),
                form_data=DossierInFormData.from_dict({"child_full_name": "Trần Minh Khôi"}),
            ),
        ),
    }
    for status, problem in problems.items():
        assert isinstance(problem, Problem), (status, problem)
        assert problem.status == status
        assert problem.type_
        assert problem.title
    missing = problems[422].additional_properties["missing_fields"]
    assert set(missing) == set(FORM) - {"child_full_name"}


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK (openjdk-17-jdk-headless)")
def test_the_readme_flow_through_a_generated_java_client(stack: Stack, tmp_path: Path) -> None:
    assert GENERATOR_JAR.exists(), "run `make openapi-generator-jars`"
    sources = tmp_path / "src"
    for service in ("identity", "intake"):
        subprocess.run(
            [
                "java",
                "-jar",
                str(GENERATOR_JAR),
                "generate",
                "--input-spec",
                stack.url(service) + "/openapi.json",
                "--generator-name",
                "java",
                "--library",
                "native",
                "--output",
                str(tmp_path / service),
                "--api-package",
                f"vn.gov.gateway.{service}.api",
                "--model-package",
                f"vn.gov.gateway.{service}.model",
                "--invoker-package",
                f"vn.gov.gateway.{service}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        shutil.copytree(tmp_path / service / "src" / "main" / "java", sources, dirs_exist_ok=True)
    shutil.copy(FLOW_JAVA, sources / FLOW_JAVA.name)
    classes = tmp_path / "classes"
    classpath = os.pathsep.join(
        str(jar) for jar in sorted(GENERATOR_LIBS.glob("*.jar")) if jar != GENERATOR_JAR
    )
    compiled = subprocess.run(
        ["javac", "-nowarn", "-encoding", "UTF-8", "-d", str(classes), "-cp", classpath]
        + [str(p) for p in sources.rglob("*.java")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert compiled.returncode == 0, compiled.stderr[-4000:]
    desk = stack.credentials.clients[DESK]
    reader = stack.credentials.clients[READER_ONLY]
    ran = subprocess.run(
        [
            "java",
            "-cp",
            f"{classes}{os.pathsep}{classpath}",
            "ReadmeFlow",
            stack.url("identity"),
            stack.url("intake"),
            f"{desk.client_id}:{desk.secret}",
            f"{reader.client_id}:{reader.secret}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    assert "README flow completed" in ran.stdout, ran.stdout
