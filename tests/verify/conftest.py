"""Real deployments for `setu verify`: uvicorn serving the app on free ports, one over TLS (a certificate
made here for 127.0.0.1) with the ML tier, one over plain http without it."""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api.app import create_app
from api.lib.settings import Settings
from tests.utils.servers import free_port


@dataclass(frozen=True)
class Deployment:
    url: str
    settings: Settings
    ca_file: Path | None = None


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files); the certificate is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "setu verify test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@contextmanager
def _serve(settings: Settings, port: int, **tls: str) -> Iterator[None]:
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        **tls,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"verify-uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def https_deployment(ml_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment as GPTs see one: https public URL (so it publishes the GPT schema), ML tier attached."""
    cert_file, key_file = _self_signed_certificate(tmp_path_factory.mktemp("tls"))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    settings = ml_settings.model_copy(update={"public_url": url, "port": port})
    with _serve(settings, port, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)):
        yield Deployment(url, settings, cert_file)


@pytest.fixture(scope="module")
def http_deployment(settings: Settings) -> Iterator[Deployment]:
    """A local deployment on plain http (like `make run`), without the ML tier."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live = settings.model_copy(update={"public_url": url, "port": port})
    with _serve(live, port):
        yield Deployment(url, live)
