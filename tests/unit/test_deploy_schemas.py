"""The compose file and the Kubernetes manifests are valid against their published schemas:
no container runs here, so a typo in deploy/ would only show on a real cluster. The schemas
come from PyPI packages (check-jsonschema vendors the Compose Specification's, and
kubernetes-validate the Kubernetes API's), so nothing is downloaded at test time."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# A Kubernetes minor in support today; the manifests use only stable APIs (apps/v1, v1).
KUBERNETES = "1.33"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml")) + sorted((DEPLOY / "k8s").glob("*.template"))


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # What `make run` starts, the compose file runs too (Kafka and PostgreSQL besides).
    assert {"intake", "routing", "notify", "identity", "console"} <= set(compose["services"])


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_each_kubernetes_manifest_is_valid_for_the_api(manifest: Path) -> None:
    found = documents(manifest)
    assert found, f"{manifest.name} holds no object"
    for document in found:
        # strict: a misspelt field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    # The check above is only worth something if it can fail.
    deployment = documents(DEPLOY / "k8s" / "console.yaml")[0]
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
