"""The checks `setu verify` runs against a deployment, in order. Each one passes, fails, warns or is skipped.

Everything goes over HTTP to what the deployment publishes (plus its metrics URL, which production keeps off
the public address), so the same checks work against `make run`, a staging host and production behind nginx.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from prometheus_client.parser import text_string_to_metric_families

from api.openapi.gpt import GptSchemaError, check_gpt_limits, operations

# Series every API process exports once it has answered a request and probed its dependencies (at start,
# then every 10 s); the alert rules and dashboards in docker/ read them.
API_SERIES = (
    "setu_http_requests_total",
    "setu_http_request_duration_seconds_bucket",
    "setu_http_requests_in_progress",
    "setu_dependency_up",
    "setu_db_pool_checked_out",
    "setu_db_pool_capacity",
    "setu_serving_circuit_open",
)
METADATA_PATH = "/.well-known/oauth-authorization-server"
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
OPTIONAL_ENDPOINTS = ("revocation_endpoint", "introspection_endpoint")
# JWK members that only a private key has (RFC 7518 §6): a key set carrying one leaks the signing key.
PRIVATE_KEY_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
VERIFY_SCOPE = "curriculum:read"
AUTHENTICATED_PATH = "/api/v1/curriculum/standards?limit=1"
CREDENTIALS_HINT = (
    "no client credentials: pass --client-id and --client-secret "
    "(or set SETU_VERIFY_CLIENT_ID and SETU_VERIFY_CLIENT_SECRET)"
)


class Outcome(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    WARN = "warn"
    """The deployment works, but something a GPT needs is not there yet (the reason says what)."""
    SKIP = "skip"
    """Not run: what it needs was not given (the reason says what)."""
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class Target:
    """The deployment to verify, and what verifying it may use."""

    url: str
    metrics_url: str | None = None
    """Where its Prometheus metrics are (default: URL/metrics; production serves them off the public URL)."""
    client_id: str | None = None
    client_secret: str | None = None


class CheckFailed(Exception):
    """The deployment failed the check; the message is the reason shown."""


class CheckWarned(Exception):
    """The check found something to fix before GPTs can use the deployment; the message says what."""


class CheckSkipped(Exception):
    """The check could not run; the message says what it needs."""


def _error_text(error: httpx.HTTPError) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _reason(response: httpx.Response) -> str:
    """What an error answer says: a problem's detail, an OAuth error, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for fields in (("detail",), ("error", "error_description"), ("title",)):
            said = [str(body[field]) for field in fields if body.get(field)]
            if said:
                return ": ".join(said)
    return response.text.strip()[:200] or "(empty body)"


class Verification:
    """Runs the checks against one deployment with one HTTP client; later checks use what earlier ones
    learned (the OAuth metadata, the access token)."""

    def __init__(self, target: Target, http: httpx.Client) -> None:
        self.target = target
        self.http = http
        self.base = target.url.rstrip("/")
        self.metadata: dict[str, Any] = {}
        self.access_token: str | None = None

    def run(self) -> list[CheckResult]:
        results = [self._run_one("health", self.health), *self.ready()]
        named: list[tuple[str, Callable[[], str]]] = [
            ("metrics", self.metrics),
            ("oauth-metadata", self.oauth_metadata),
            ("client-credentials-token", self.client_credentials_token),
            ("jwks", self.jwks),
            ("gpt-schema", self.gpt_schema),
            ("authenticated-call", self.authenticated_call),
        ]
        results.extend(self._run_one(name, check) for name, check in named)
        return results

    @staticmethod
    def _run_one(name: str, check: Callable[[], str]) -> CheckResult:
        try:
            return CheckResult(name, Outcome.PASS, check())
        except CheckFailed as error:
            return CheckResult(name, Outcome.FAIL, str(error))
        except CheckWarned as error:
            return CheckResult(name, Outcome.WARN, str(error))
        except CheckSkipped as error:
            return CheckResult(name, Outcome.SKIP, str(error))

    # HTTP

    def _request(self, method: str, url: str, **options: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **options)
        except httpx.HTTPError as error:
            raise CheckFailed(f"{method} {url}: {_error_text(error)}") from None

    def _get(self, url: str, **options: Any) -> httpx.Response:
        return self._request("GET", url, **options)

    @staticmethod
    def _expect(response: httpx.Response, status: int) -> None:
        if response.status_code != status:
            request = response.request
            raise CheckFailed(
                f"{request.method} {request.url} answered {response.status_code}, not {status}: "
                f"{_reason(response)}"
            )

    @staticmethod
    def _json_object(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CheckFailed(
                f"{response.request.url} did not answer a JSON object "
                f"({response.headers.get('content-type', 'no content type')})"
            )
        return body

    # Checks

    def health(self) -> str:
        response = self._get(f"{self.base}/health")
        self._expect(response, 200)
        body = self._json_object(response)
        if body.get("status") != "ok":
            raise CheckFailed(f"/health answered {body!r}")
        return f"ok in {response.elapsed.total_seconds() * 1000:.0f} ms"

    def ready(self) -> list[CheckResult]:
        """One result per component /ready reports; an optional component that is down is a warning."""
        try:
            response = self._get(f"{self.base}/ready")
            if response.status_code not in {200, 503}:
                self._expect(response, 200)
            components = self._json_object(response).get("components")
            if not isinstance(components, dict) or not components:
                raise CheckFailed("/ready lists no components")
        except CheckFailed as error:
            return [CheckResult("ready", Outcome.FAIL, str(error))]
        results = []
        for name, report in components.items():
            report = report if isinstance(report, dict) else {}
            reason = str(report.get("reason") or report.get("status") or "no status")
            if report.get("status") == "ok":
                results.append(CheckResult(f"ready.{name}", Outcome.PASS, "ok"))
            elif str(report.get("required", "true")).lower() == "false":
                results.append(CheckResult(f"ready.{name}", Outcome.WARN, f"optional, down: {reason}"))
            else:
                results.append(CheckResult(f"ready.{name}", Outcome.FAIL, reason))
        if response.status_code == 503 and all(result.outcome != Outcome.FAIL for result in results):
            results.append(CheckResult("ready", Outcome.FAIL, "/ready answered 503"))
        return results

    def metrics(self) -> str:
        url = self.target.metrics_url or f"{self.base}/metrics"
        response = self._get(url)
        self._expect(response, 200)
        try:
            series = {
                sample.name
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
            }
        except ValueError as error:
            raise CheckFailed(f"{url} is not Prometheus text: {error}") from None
        missing = [name for name in API_SERIES if name not in series]
        if missing:
            raise CheckFailed(f"{url} lacks {', '.join(missing)}")
        ours = {name for name in series if name.startswith("setu_")}
        return f"{len(API_SERIES)} required series present ({len(ours)} setu_* series in all)"

    def oauth_metadata(self) -> str:
        """RFC 8414: an absolute issuer (https when we are reached over https) whose endpoints answer."""
        response = self._get(f"{self.base}{METADATA_PATH}")
        self._expect(response, 200)
        metadata = self._json_object(response)
        issuer = str(metadata.get("issuer") or "")
        parts = urlsplit(issuer)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            raise CheckFailed(f"issuer {issuer!r} is not an absolute URL without query or fragment")
        if urlsplit(self.base).scheme == "https" and parts.scheme != "https":
            raise CheckFailed(f"issuer {issuer} is http on a deployment reached over https")
        self.metadata = metadata
        problems: list[str] = []
        answering = 0
        for field in REQUIRED_ENDPOINTS + OPTIONAL_ENDPOINTS:
            endpoint = metadata.get(field)
            if endpoint is None:
                if field in REQUIRED_ENDPOINTS:
                    problems.append(f"no {field}")
                continue
            endpoint_parts = urlsplit(str(endpoint))
            if not endpoint_parts.netloc or endpoint_parts.scheme != parts.scheme:
                problems.append(f"{field} {endpoint!r} is not an absolute {parts.scheme} URL")
                continue
            try:
                answer = self._get(str(endpoint))
            except CheckFailed as error:
                problems.append(str(error))
                continue
            # A GET may be refused (405, 400); a missing route or a broken one is what we look for.
            if answer.status_code == 404 or answer.status_code >= 500:
                problems.append(f"{field} {endpoint} answered {answer.status_code}")
            else:
                answering += 1
        if "code" not in metadata.get("response_types_supported", []):
            problems.append("response_types_supported lacks code")
        if problems:
            raise CheckFailed("; ".join(problems))
        return f"issuer {issuer}; {answering} endpoints absolute and answering"

    def client_credentials_token(self) -> str:
        """A bearer access token (and no refresh token) from the client-credentials grant."""
        client_id, secret = self.target.client_id, self.target.client_secret
        if not client_id or not secret:
            raise CheckSkipped(CREDENTIALS_HINT)
        url = str(self.metadata.get("token_endpoint") or f"{self.base}/oauth/token")
        response = self._request(
            "POST",
            url,
            data={"grant_type": "client_credentials", "scope": VERIFY_SCOPE},
            auth=(client_id, secret),
        )
        self._expect(response, 200)
        body = self._json_object(response)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise CheckFailed("the answer has no access_token")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise CheckFailed(f"token_type is {body.get('token_type')!r}, not Bearer")
        if "refresh_token" in body:
            raise CheckFailed("a refresh token was issued for the client-credentials grant")
        self.access_token = token
        return f"{VERIFY_SCOPE} for {client_id}, expires in {body.get('expires_in')} s"

    def jwks(self) -> str:
        """The published signing keys: each with kid and alg, no private parameters, importable; the token
        from the previous check verifies with them and names the issuer, the client and the scope."""
        url = str(self.metadata.get("jwks_uri") or f"{self.base}/.well-known/jwks.json")
        response = self._get(url)
        self._expect(response, 200)
        keys = self._json_object(response).get("keys")
        if not isinstance(keys, list):
            raise CheckFailed(f"{url} has no keys array")
        if not keys:
            if self.access_token is None:
                raise CheckWarned(f"{url} publishes no key yet (the first token issued creates one)")
            raise CheckFailed(f"{url} publishes no key, yet a token was issued")
        problems: list[str] = []
        for index, key in enumerate(keys):
            if not isinstance(key, dict):
                problems.append(f"key {index} is not an object")
                continue
            missing = [member for member in ("kid", "alg", "kty") if not key.get(member)]
            if missing:
                problems.append(f"key {index} has no {', '.join(missing)}")
            private = sorted(PRIVATE_KEY_MEMBERS & key.keys())
            if private:
                problems.append(f"key {key.get('kid', index)} publishes private parameters {private}")
        if problems:
            raise CheckFailed("; ".join(problems))
        kids = [str(key["kid"]) for key in keys]
        if len(set(kids)) != len(kids):
            raise CheckFailed("two keys share a kid")
        try:
            key_set = KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError) as error:
            raise CheckFailed(f"{url}: a key does not import: {error}") from None
        published = f"{len(keys)} key(s): " + ", ".join(f"{key['kid']} ({key['alg']})" for key in keys)
        if self.access_token is None:
            return published
        algorithms = sorted({str(key["alg"]) for key in keys})
        self._check_token_claims(key_set, algorithms)
        return f"{published}; the token verifies with them"

    def _check_token_claims(self, key_set: KeySet, algorithms: list[str]) -> None:
        assert self.access_token is not None
        try:
            claims = jwt.decode(self.access_token, key_set, algorithms=algorithms).claims
        except (JoseError, ValueError) as error:
            raise CheckFailed(f"the token does not verify with the published keys: {error}") from None
        issuer, client_id = self.metadata.get("issuer"), self.target.client_id
        problems = []
        if claims.get("iss") != issuer:
            problems.append(f"the token's iss {claims.get('iss')!r} is not the issuer {issuer!r}")
        if claims.get("client_id") != client_id:
            problems.append(f"the token's client_id {claims.get('client_id')!r} is not {client_id!r}")
        if VERIFY_SCOPE not in str(claims.get("scope", "")).split():
            problems.append(f"the token's scope {claims.get('scope')!r} lacks {VERIFY_SCOPE}")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            problems.append("the token is already expired")
        if problems:
            raise CheckFailed("; ".join(problems))

    def gpt_schema(self) -> str:
        """`/gpt/openapi.json` within every GPT Actions limit, its OAuth URLs those of the metadata."""
        url = f"{self.base}/gpt/openapi.json"
        response = self._get(url)
        public_url = str(self.metadata.get("issuer") or self.base)
        if response.status_code == 503 and urlsplit(public_url).scheme == "http":
            raise CheckWarned(
                f"withheld while the public URL is http ({public_url}); 503: {_reason(response)}"
            )
        self._expect(response, 200)
        document = self._json_object(response)
        if not str(document.get("openapi", "")).startswith("3.1"):
            raise CheckFailed(f"not OpenAPI 3.1 (openapi: {document.get('openapi')!r})")
        if not isinstance(document.get("paths"), dict) or not document["paths"]:
            raise CheckFailed("the schema has no paths")
        try:
            check_gpt_limits(document)
        except GptSchemaError as error:
            raise CheckFailed(f"outside the GPT limits: {error}") from None
        except (AttributeError, KeyError, TypeError, IndexError) as error:
            raise CheckFailed(f"malformed schema ({type(error).__name__}: {error})") from None
        flow: Any = document
        for key in ("components", "securitySchemes", "oauth2", "flows", "authorizationCode"):
            flow = flow.get(key) if isinstance(flow, dict) else None
        if not isinstance(flow, dict):
            raise CheckFailed("no OAuth2 authorization-code security scheme")
        mismatched = [
            f"{ours} {flow.get(ours)!r} is not the metadata's {theirs} {self.metadata[theirs]!r}"
            for ours, theirs in (
                ("authorizationUrl", "authorization_endpoint"),
                ("tokenUrl", "token_endpoint"),
            )
            if theirs in self.metadata and flow.get(ours) != self.metadata[theirs]
        ]
        if mismatched:
            raise CheckFailed("; ".join(mismatched))
        server = document["servers"][0]["url"]
        return f"{len(operations(document))} operations on {server}, within the GPT limits"

    def authenticated_call(self) -> str:
        """The token opens a GPT endpoint; the same call without it is refused."""
        if self.access_token is None:
            if not self.target.client_id or not self.target.client_secret:
                raise CheckSkipped("needs the client-credentials token")
            raise CheckSkipped("not run: there is no token (see client-credentials-token)")
        url = f"{self.base}{AUTHENTICATED_PATH}"
        response = self._get(url, headers={"Authorization": f"Bearer {self.access_token}"})
        self._expect(response, 200)
        self._json_object(response)
        anonymous = self._get(url)
        if anonymous.status_code != 401:
            raise CheckFailed(f"without a token it answered {anonymous.status_code}, not 401")
        return f"GET {AUTHENTICATED_PATH}: 200 with the token, 401 without"


def verify(target: Target, *, timeout: float = 10.0, ca_file: str | None = None) -> list[CheckResult]:
    """Run every check against `target`; never raises for a deployment's failure (each result says)."""
    trust: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    with httpx.Client(timeout=timeout, verify=trust, follow_redirects=False) as http:
        return Verification(target, http).run()
