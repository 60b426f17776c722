"""nginx in front of the API: TLS from the mounted certificate directory, per-zone rate limits on the token
endpoint, the login pages and the API, and /metrics kept private."""

from __future__ import annotations

import re

import yaml

from tests.ops.conftest import COMPOSE_FILES, DOCKER

CONFIG = (DOCKER / "nginx/setu.conf").read_text()


def _location(path: str) -> str:
    match = re.search(rf"location {re.escape(path)} \{{(.*?)\n    \}}", CONFIG, flags=re.DOTALL)
    assert match, f"no `location {path}` block"
    return match.group(1)


def test_rate_limit_zones_guard_the_token_endpoint_logins_and_the_api() -> None:
    zones = dict(re.findall(r"limit_req_zone \$binary_remote_addr zone=(\w+):\w+ rate=(\d+r/s);", CONFIG))
    assert set(zones) == {"setu_token", "setu_login", "setu_api"}
    assert "limit_req zone=setu_token" in _location("= /oauth/token")
    assert "limit_req zone=setu_login" in _location("/oauth/authorize")
    assert "limit_req zone=setu_api" in _location("/api/")
    assert "limit_req_status 429;" in CONFIG
    assert int(zones["setu_login"].removesuffix("r/s")) < int(zones["setu_api"].removesuffix("r/s"))


def test_tls_uses_the_certificates_compose_mounts() -> None:
    nginx = yaml.safe_load(COMPOSE_FILES["production"].read_text())["services"]["nginx"]
    tls_mount = next(volume for volume in nginx["volumes"] if volume.startswith("${TLS_CERT_DIR"))
    target = tls_mount.split("}:", 1)[1].removesuffix(":ro")
    assert f"ssl_certificate     {target}/fullchain.pem;" in CONFIG
    assert f"ssl_certificate_key {target}/privkey.pem;" in CONFIG
    assert re.search(r"listen 443 ssl", CONFIG)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in CONFIG
    assert re.search(r"listen 80 .*\n.*\n    location / \{\n        return 308 https://", CONFIG)


def test_metrics_are_not_published_and_the_api_sees_the_client() -> None:
    assert "return 404;" in _location("= /metrics")
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in CONFIG
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in CONFIG
    # GPT Actions give up at 45 s; nginx must wait at least that long for the API.
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", CONFIG).group(1))  # type: ignore[union-attr]
    assert read_timeout >= 45
