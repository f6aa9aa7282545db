"""The wire calls, one method per route, with no retry policy: what
:class:`~keyseat_client.Client` builds on, for calls it does not wrap."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from ._version import __version__
from .errors import (
    ConfigError,
    KeyseatError,
    ServerUnreachable,
    certificate_error,
    error_from_answer,
)
from .signing import (
    SIGNATURE_HEADER,
    PinnedKey,
    PublicKeys,
    new_nonce,
    pinned_keys,
    shown_prefix,
    verify,
)

__all__ = ["Api", "DEFAULT_TIMEOUT"]

#: Default time budget of one HTTP call, in seconds.
DEFAULT_TIMEOUT = 10.0

_USER_AGENT = f"keyseat-client-python/{__version__}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would turn the POST into a GET without
    its body. The 3xx is reported instead, naming where to point the client."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _check_url(server_url: str) -> str:
    base = server_url.strip().rstrip("/")
    if base.startswith("http://"):
        rest = base[len("http://") :]
    elif base.startswith("https://"):
        rest = base[len("https://") :]
    else:
        raise ConfigError(f"server URL must start with http:// or https:// (got `{base}`)")
    if not rest or any(c.isspace() for c in rest):
        raise ConfigError(f"server URL `{base}` has no host")
    return base


def _retry_after(headers: Any) -> Optional[float]:
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(int(value.strip()))
    except ValueError:
        return None


class Api:
    """A keyseat server's session API. Every method returns the answer's JSON
    object on 2xx and raises a :class:`~keyseat_client.KeyseatError`
    subclass otherwise (:class:`~keyseat_client.ServerUnreachable` when no
    answer came or it was a 5xx). Thread-safe: every call opens its own
    connection. Proxies are taken from the environment (``HTTPS_PROXY``,
    ``NO_PROXY``...), as everywhere in ``urllib``.

    Over ``https://`` the server's certificate is checked against the
    operating system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR``
    honoured, as everywhere in ``ssl``) and, with ``cafile``, the CA
    certificates of that PEM file too; a refused certificate raises
    :class:`~keyseat_client.CertificateNotTrusted`.

    With ``public_key`` (one key or a list, see
    :class:`~keyseat_client.Client`), every POST sends a fresh nonce and
    raises :class:`~keyseat_client.UntrustedAnswer` for an answer that is
    not signed by a pinned key over its exact body with that nonce and the
    key's prefix echoed, before anything in it (its status included) is
    believed."""

    def __init__(
        self,
        server_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        public_key: Optional[PublicKeys] = None,
        cafile: "Optional[str | os.PathLike[str]]" = None,
    ) -> None:
        if not timeout or timeout <= 0:
            raise ConfigError("the timeout must be a positive number of seconds")
        self._base = _check_url(server_url)
        self._timeout = float(timeout)
        handlers: List[urllib.request.BaseHandler] = [_NoRedirect()]
        if cafile is not None:
            handlers.append(urllib.request.HTTPSHandler(context=_trusting(cafile)))
        self._opener = urllib.request.build_opener(*handlers)
        self._pinned: Tuple[PinnedKey, ...] = pinned_keys(public_key)

    @property
    def base(self) -> str:
        """The server URL, without a trailing slash."""
        return self._base

    @property
    def timeout(self) -> float:
        """The time budget of one call, in seconds."""
        return self._timeout

    @property
    def pinned(self) -> Tuple[PinnedKey, ...]:
        """The public keys answers must be signed with (empty: not checked)."""
        return self._pinned

    @property
    def verifies(self) -> bool:
        """Whether answers are checked."""
        return bool(self._pinned)

    def __repr__(self) -> str:
        return f"Api({self._base!r})"

    # -- transport --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Sends one request; ``timeout`` shortens the call's time budget
        (never lengthens it). Not verified: see :meth:`post`."""
        return _read(*self._send(method, path, body, timeout))

    def _send(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]],
        timeout: Optional[float],
        extra: float = 0.0,
    ) -> Tuple[int, Any, bytes]:
        """One exchange: the status, headers and raw body bytes. ``extra``
        seconds are added to the budget (a held heartbeat's wait)."""
        budget = self._timeout if timeout is None else min(timeout, self._timeout)
        budget = max(budget, 0.001) + max(extra, 0.0)
        data = None
        headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self._base + path, data=data, headers=headers, method=method
        )
        try:
            with self._opener.open(req, timeout=budget) as resp:
                status = resp.status
                answer_headers = resp.headers
                raw = resp.read()
        except urllib.error.HTTPError as e:
            status = e.code
            answer_headers = e.headers
            try:
                raw = e.read()
            except (OSError, http.client.HTTPException) as read_error:
                raise ServerUnreachable(
                    f"reading the answer failed: {read_error}"
                ) from None
            finally:
                e.close()
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise certificate_error(e.reason) from None
            raise ServerUnreachable(_describe_reason(e.reason)) from None
        except ssl.SSLCertVerificationError as e:
            raise certificate_error(e) from None
        except (socket.timeout, TimeoutError) as e:
            raise ServerUnreachable(_describe_reason(e)) from None
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(_describe_reason(e)) from None
        return status, answer_headers, raw

    def post(
        self, path: str, body: Dict[str, Any], timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """POSTs JSON to ``path`` (e.g. ``"/api/session/status"``). With a
        pinned key, a fresh ``nonce`` is added to the body and the answer is
        verified before it is read."""
        return self._post(path, body, timeout)

    def _post(
        self,
        path: str,
        body: Dict[str, Any],
        timeout: Optional[float],
        extra: float = 0.0,
    ) -> Dict[str, Any]:
        if not self._pinned:
            return _read(*self._send("POST", path, body, timeout, extra))
        nonce = new_nonce()
        sent = dict(body)
        sent["nonce"] = nonce
        status, headers, raw = self._send("POST", path, sent, timeout, extra)
        header = headers.get(SIGNATURE_HEADER) if headers is not None else None
        verify(
            self._pinned,
            header,
            raw,
            nonce,
            shown_prefix(body.get("access_key", "")),
            path,
            status,
        )
        return _read(status, headers, raw)

    def signing_keys(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``GET /api/signing-keys``: the JWK set of the keys that sign
        answers (what to pin; not itself signed)."""
        return self.request("GET", "/api/signing-keys", None, timeout)

    # -- routes -----------------------------------------------------------

    def health(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``GET /health``."""
        return self.request("GET", "/health", None, timeout)

    def start(
        self,
        access_key: str,
        session_id: Optional[str] = None,
        device_name: Optional[str] = None,
        fingerprint: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """``POST /api/session/start``."""
        body: Dict[str, Any] = {"access_key": access_key}
        if session_id is not None:
            body["session_id"] = session_id
        body["device"] = {"name": device_name, "fingerprint": fingerprint}
        return self.post("/api/session/start", body, timeout)

    def borrow(
        self,
        access_key: str,
        hours: int,
        session_id: Optional[str] = None,
        device_name: Optional[str] = None,
        fingerprint: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """``POST /api/session/borrow``: a start's answer plus
        ``borrowed_until`` and ``lease_token``."""
        body: Dict[str, Any] = {"access_key": access_key}
        if session_id is not None:
            body["session_id"] = session_id
        body["device"] = {"name": device_name, "fingerprint": fingerprint}
        body["hours"] = hours
        return self.post("/api/session/borrow", body, timeout)

    def heartbeat(
        self,
        access_key: str,
        session_id: str,
        timeout: Optional[float] = None,
        *,
        wait_seconds: int = 0,
    ) -> Dict[str, Any]:
        """``POST /api/session/heartbeat``. With ``wait_seconds`` (1 up to
        the heartbeat interval) the server renews the lease at once but
        holds the answer until that many seconds pass, or answers at once
        with the session's end (superseded, ended, revoked, key refused);
        the call's budget is then the wait plus the timeout. A server before
        the waiting heartbeat ignores the field and answers at once."""
        body: Dict[str, Any] = {"access_key": access_key, "session_id": session_id}
        wait = int(wait_seconds)
        if wait > 0:
            body["wait_seconds"] = wait
        return self._post("/api/session/heartbeat", body, timeout, float(max(wait, 0)))

    def end(
        self, access_key: str, session_id: str, timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """``POST /api/session/end``."""
        return self.post(
            "/api/session/end",
            {"access_key": access_key, "session_id": session_id},
            timeout,
        )

    def status(self, access_key: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``POST /api/session/status``."""
        return self.post("/api/session/status", {"access_key": access_key}, timeout)


def _trusting(cafile: "str | os.PathLike[str]") -> ssl.SSLContext:
    """The system store (as urllib's default) plus the CAs of ``cafile``; a
    missing file or one without a PEM certificate is a ConfigError naming it
    (the Rust client's words)."""
    context = ssl.create_default_context()
    path = os.fspath(cafile)
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError as e:
        raise ConfigError(f"the CA file {path} cannot be read: {e.strerror}") from None
    except OSError as e:
        if isinstance(e, ssl.SSLError):
            raise ConfigError(
                f"the CA file {path} holds no certificate (expected PEM: "
                "-----BEGIN CERTIFICATE-----)"
            ) from None
        raise ConfigError(f"the CA file {path} cannot be read: {e}") from None
    return context


def _describe_reason(reason: object) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        if reason.errno is not None:
            return f"{reason.strerror} (os error {reason.errno})"
        return reason.strerror
    text = str(reason) or type(reason).__name__
    return text


def _read(status: int, headers: Any, raw: bytes) -> Dict[str, Any]:
    retry_after = _retry_after(headers)
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = None
    if 200 <= status < 300:
        if not isinstance(parsed, dict):
            raise KeyseatError(
                "the server's answer was not a JSON object",
                code="invalid_response",
                status=status,
                retry_after=retry_after,
            )
        return parsed
    error: Dict[str, Any] = {}
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        if isinstance(parsed["error"].get("code"), str):
            error = parsed["error"]
    code = error.get("code") or f"http_{status}"
    message = error.get("message")
    if not isinstance(message, str):
        if 300 <= status < 400 and headers is not None and headers.get("Location"):
            message = (
                f"the server redirected to {headers.get('Location')}; "
                "use that URL as the server URL"
            )
        else:
            message = text[:200]
    raise error_from_answer(status, code, message, error, retry_after)
