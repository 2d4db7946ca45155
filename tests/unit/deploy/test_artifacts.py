"""The shipped deployment files pass the checks that run without a container engine, systemd
or a cluster: hadolint on the Dockerfile, `systemd-analyze verify` on the units, the Kubernetes
schema (strict) on the manifests, and the configurations they carry load as Prognos settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.settings import load_settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes release still supported upstream when these manifests were written.
KUBERNETES_VERSION = "1.30.0"
SHIPPED_BINARY = "/opt/prognos/bin/prognos"


def tool(name: str) -> str:
    """The binary from the venv or PATH; skip locally (fail in CI) when it is missing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"CI must provide it: {message}")
        pytest.skip(message)
    return found


def resources() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


# ----------------------------------------------------------------------------- image


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", DOCKERFILE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_non_root_with_cpu_torch() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.count("\nFROM ") == 2
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert "\nUSER 10001:10001\n" in text
    assert 'ENTRYPOINT ["prognos"]' in text and "HEALTHCHECK" in text


def test_a_broken_dockerfile_fails_the_lint(tmp_path: Path) -> None:
    """The check checks: a root image with unpinned apt packages is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def test_the_image_default_config_loads() -> None:
    settings = load_settings(DEPLOY / "docker" / "prognos.yaml", search=False)
    assert settings.data_dir == Path("/var/lib/prognos")
    assert settings.api.host == "0.0.0.0"


# ----------------------------------------------------------------------------- systemd


def verify_unit(unit: Path, tmp_path: Path, binary: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a copy that runs `binary`: verify refuses an ExecStart whose
    binary does not exist, and /opt/prognos is where an installation puts it, not this checkout.
    Nothing else in the copy differs from the shipped file."""
    copy = tmp_path / unit.name
    text = unit.read_text(encoding="utf-8")
    assert text.count(SHIPPED_BINARY) == 1
    copy.write_text(text.replace(SHIPPED_BINARY, binary), encoding="utf-8")
    return subprocess.run(
        [tool("systemd-analyze"), "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_units_pass_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    prognos = shutil.which("prognos", path=str(Path(sys.executable).parent))
    assert prognos is not None
    result = verify_unit(unit, tmp_path, prognos)
    # Unknown keys and bad values are warnings on stderr with exit status 0: both must be clean.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_a_unit_with_a_typo_fails_the_check(tmp_path: Path) -> None:
    broken = tmp_path / "src" / "prognos-serve.service"
    broken.parent.mkdir()
    text = (DEPLOY / "systemd" / "prognos-serve.service").read_text(encoding="utf-8")
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    prognos = shutil.which("prognos", path=str(Path(sys.executable).parent))
    assert prognos is not None
    result = verify_unit(broken, tmp_path, prognos)
    assert "Unknown key 'ProtectSystm'" in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_units_are_hardened_and_stop_gracefully(unit: Path) -> None:
    lines = set(unit.read_text(encoding="utf-8").splitlines())
    for line in (
        "User=prognos",
        "EnvironmentFile=/etc/prognos/prognos.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/prognos",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "TimeoutStopSec=300s",
    ):
        assert line in lines, line
    assert f"ExecStart={SHIPPED_BINARY} {unit.stem.removeprefix('prognos-')}" in lines


# ----------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("item", resources(), ids=lambda r: f"{r[0]}:{r[1]['metadata']['name']}")
def test_the_manifests_match_the_kubernetes_schema(item: tuple[str, dict[str, Any]]) -> None:
    _, doc = item
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert "namespace" not in doc["metadata"]  # kubectl apply -n chooses it
    assert doc["kind"] != "Secret"  # secrets are referenced, never shipped


def test_strict_validation_refuses_an_unknown_field() -> None:
    doc = by_kind("Deployment", "prognos-serve")
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_serve_is_replicated_probed_and_locked_down() -> None:
    deployment = by_kind("Deployment", "prognos-serve")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    assert container["envFrom"] == [{"secretRef": {"name": "prognos-secrets"}}]


def test_the_configmap_holds_a_valid_configuration(tmp_path: Path) -> None:
    config = tmp_path / "prognos.yaml"
    config.write_text(by_kind("ConfigMap", "prognos-config")["data"]["prognos.yaml"])
    settings = load_settings(config, search=False)
    assert settings.effective_source == "prometheus"
    assert settings.remediation.audit_checkpoint == Path("/var/lib/prognos/audit-head")


def test_the_image_copies_every_package_the_distribution_ships() -> None:
    """A package added to pyproject.toml but not to the Dockerfile (or .dockerignore) would
    build an image that fails at its first import."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    allowed = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for package in packages:
        assert f"COPY {package} ./{package}\n" in dockerfile, package
        assert f"!{package}/" in allowed, package
