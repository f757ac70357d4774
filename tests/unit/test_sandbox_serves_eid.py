"""`python -m sandbox` serves the e-ID provider under /oidc (with the client configured from
SANDBOX_OIDC_CLIENT_*) and the population registry over gRPC beside the HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
from joserfc.jwk import RSAKey

from gateway.v1 import registry_pb2, registry_pb2_grpc
from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings


async def test_sandbox_serves_the_provider_and_the_registry(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, {"alg": "RS256"}, auto_kid=True)
    jwks = tmp_path / "client.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    settings = SandboxSettings(
        http_port=0,
        smtp_port=0,
        registry_grpc_port=0,
        oidc_client_id="dossier-gateway",
        oidc_redirect_uris="http://127.0.0.1:9/v1/citizen/callback",
        oidc_client_jwks_file=str(jwks),
    )
    async with Sandbox(settings) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
            discovery = (await http.get("/oidc/.well-known/openid-configuration")).json()
            assert discovery["issuer"] == sandbox.url + "/oidc"
            assert discovery["jwks_uri"] == sandbox.url + "/oidc/jwks"
            assert (await http.get("/oidc/jwks")).json()["keys"]
        provider = sandbox.app.state.oidc.state.provider
        assert provider.clients["dossier-gateway"].jwks["keys"][0]["kid"] == key.kid

        target = f"127.0.0.1:{sandbox.app.state.registry_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            residence = await registry_pb2_grpc.PopulationRegistryStub(channel).GetResidence(
                registry_pb2.GetResidenceRequest(
                    personal_id="001090012345", purpose="test", requesting_agency="000.00.01.H22"
                ),
                timeout=5,
            )
        assert residence.permanent_residence.province_code == "001"
