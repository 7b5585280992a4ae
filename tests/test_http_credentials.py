"""Credentials: only the ones the user gave for telemetry, and never shown.

* Nothing ambient: a ``~/.netrc`` (even a ``default`` line) is never sent,
  while proxies from the environment, with their own credentials, still are.
* ``user:password@`` in the endpoint URL is sent as ``Authorization: Basic``
  by both clients, and the URL goes out without it.
* A token (``token=`` or ``NAT_TELEMETRY_TOKEN``) is sent as ``Authorization:
  Bearer``, in place of any URL credentials.
* No secret reaches an error message or a log line, the libraries' included.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from test_http_client import (
    BODY,
    AnyClient,
    RawServer,
    ServeFixture,
    answer,
    client_fixture,  # noqa: F401  (the client fixture)
    serve_fixture,  # noqa: F401  (the serve fixture)
)

from nat_telemetry import config
from nat_telemetry.http import RequestsClient, Response, TransportError, UrllibClient
from nat_telemetry.transport import HttpTransport, Outcome, transport_for

SECRET = "pa55-w0rd-secret"
TOKEN = "tok-3f9a.b~c+d/e=="


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def authorization(server: RawServer) -> list[str | None]:
    return [request.headers.get("authorization") for request in server.requests]


@pytest.fixture
def netrc_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``~/.netrc`` (and ``NETRC``) with a default login, as many machines have."""
    home = tmp_path / "netrc-home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {SECRET}\n"
                     f"default login bob password {SECRET}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))


def clear_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


# ------------------------------------------------------------ nothing ambient


@pytest.mark.usefixtures("netrc_everywhere")
def test_netrc_credentials_are_never_sent(client: AnyClient, serve: ServeFixture) -> None:
    server = serve(answer(200))
    assert client.post(server.url, BODY, 2.0) == Response(200, None)
    assert authorization(server) == [None]


@pytest.mark.usefixtures("netrc_everywhere")
def test_netrc_is_ignored_and_the_proxy_from_the_environment_used(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(answer(200))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    clear_no_proxy(monkeypatch)
    target = "http://telemetry.invalid/v1.1/events/json"
    assert client.post(target, BODY, 2.0) == Response(200, None)
    (request,) = proxy.requests
    assert request.line == f"POST {target} HTTP/1.1"  # the absolute URI: a proxy request
    assert "authorization" not in request.headers
    assert "proxy-authorization" not in request.headers


def test_the_proxys_own_credentials_from_the_environment_are_used(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(answer(200))
    monkeypatch.setenv("HTTP_PROXY", f"http://carol:{SECRET}@127.0.0.1:{proxy.port}")
    clear_no_proxy(monkeypatch)
    assert client.post("http://telemetry.invalid/x", BODY, 2.0) == Response(200, None)
    (request,) = proxy.requests
    assert request.headers["proxy-authorization"] == basic(f"carol:{SECRET}")
    assert "authorization" not in request.headers


# ------------------------------------------------------------ URL credentials


@pytest.mark.parametrize(("userinfo", "pair"), [
    (f"user:{SECRET}", f"user:{SECRET}"),
    ("us%40er:p%3Ass%20w%C3%B6rd", "us@er:p:ss wörd"),  # percent-encoded, UTF-8
    ("user", "user:"),
    ("user:", "user:"),
])
def test_url_credentials_are_sent_as_basic_auth(
    client: AnyClient, serve: ServeFixture, userinfo: str, pair: str
) -> None:
    server = serve(answer(200))
    assert client.post(with_userinfo(server.url, userinfo), BODY, 2.0) == Response(200, None)
    (request,) = server.requests
    assert request.headers["authorization"] == basic(pair)
    assert request.target == "/ingest"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"


def test_url_credentials_through_a_proxy(
    client: AnyClient, serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(answer(200))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    clear_no_proxy(monkeypatch)
    url = f"http://user:{SECRET}@telemetry.invalid/v1.1/events/json"
    assert client.post(url, BODY, 2.0) == Response(200, None)
    (request,) = proxy.requests
    assert request.line == "POST http://telemetry.invalid/v1.1/events/json HTTP/1.1"
    assert request.headers["authorization"] == basic(f"user:{SECRET}")


def test_an_authorization_header_takes_the_place_of_url_credentials(
    client: AnyClient, serve: ServeFixture
) -> None:
    server = serve(answer(200))
    url = with_userinfo(server.url, f"user:{SECRET}")
    client.post(url, BODY, 2.0, headers={"Authorization": f"Bearer {TOKEN}"})
    assert authorization(server) == [f"Bearer {TOKEN}"]


# ------------------------------------------------------------ token


@pytest.mark.parametrize("client_class", [RequestsClient, UrllibClient])
def test_a_token_is_sent_as_a_bearer_and_wins_over_url_credentials(
    serve: ServeFixture, client_class: type[AnyClient]
) -> None:
    server = serve(answer(200))
    plain = HttpTransport(server.url, client=client_class(), token=TOKEN)
    with_url_credentials = HttpTransport(with_userinfo(server.url, f"user:{SECRET}"),
                                         client=client_class(), token=TOKEN)
    no_token = HttpTransport(server.url, client=client_class())
    for transport in (plain, with_url_credentials, no_token):
        assert transport.send(BODY, 2.0).outcome == Outcome.SENT
        transport.close()
    assert authorization(server) == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", None]


def test_a_caller_client_without_headers_still_works_without_a_token() -> None:
    class ThreeArguments:
        def post(self, url: str, body: bytes, timeout: float) -> Response:
            return Response(204, None)

        def close(self) -> None:
            pass

    transport = HttpTransport("http://127.0.0.1:9/x", client=ThreeArguments())  # type: ignore[arg-type]
    assert transport.send(BODY, 1.0).outcome == Outcome.SENT


def test_the_token_comes_from_the_environment(
    serve: ServeFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(200))
    for value in (f"  {TOKEN}\n", "", None):
        if value is None:
            monkeypatch.delenv(config.TOKEN_ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(config.TOKEN_ENV_VAR, value)
        transport = transport_for(server.url, dry_run=False)
        assert transport.send(BODY, 2.0).outcome == Outcome.SENT
        transport.close()
    assert config.TOKEN_ENV_VAR == "NAT_TELEMETRY_TOKEN"
    assert authorization(server) == [f"Bearer {TOKEN}", None, None]


def test_an_unsendable_token_is_refused_without_being_shown(
    serve: ServeFixture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = f"{TOKEN}\r\nX-Injected: 1"
    with pytest.raises(ValueError) as refused:
        HttpTransport("http://127.0.0.1:9/x", token=bad)
    assert TOKEN not in str(refused.value)
    # From the environment: said once at WARNING (without it), and not sent.
    server = serve(answer(200))
    monkeypatch.setenv(config.TOKEN_ENV_VAR, bad)
    caplog.set_level(logging.DEBUG)
    transport = transport_for(server.url, dry_run=False)
    assert transport.send(BODY, 2.0).outcome == Outcome.SENT
    transport.close()
    assert authorization(server) == [None]
    assert [r.levelno for r in caplog.records if config.TOKEN_ENV_VAR in r.getMessage()] == [
        logging.WARNING]
    assert TOKEN not in caplog.text


def test_the_token_is_not_in_the_repr() -> None:
    transport = HttpTransport("http://127.0.0.1:9/x", token=TOKEN)
    assert TOKEN not in repr(transport)


# ------------------------------------------------------------ never shown


@pytest.mark.parametrize("client_class", [RequestsClient, UrllibClient])
def test_no_secret_in_errors_or_log_lines(
    client_class: type[AnyClient], serve: ServeFixture, refused_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3's, requests'
    answered = serve(answer(200))
    silent = serve(lambda srv, conn, req: srv.closing.wait(5))
    urls = {
        "refused": with_userinfo(refused_url, f"user:{SECRET}"),
        "answered": with_userinfo(answered.url, f"user:{SECRET}"),
        "silent": with_userinfo(silent.url, f"user:{SECRET}"),
    }
    outcomes = {}
    for name, url in urls.items():
        for token in (None, TOKEN):
            transport = HttpTransport(url, client=client_class(), token=token)
            outcomes[name, token] = transport.send(BODY, 0.3).outcome
            transport.close()
    assert outcomes == {
        ("refused", None): Outcome.TRANSIENT, ("refused", TOKEN): Outcome.TRANSIENT,
        ("answered", None): Outcome.SENT, ("answered", TOKEN): Outcome.SENT,
        ("silent", None): Outcome.TRANSIENT, ("silent", TOKEN): Outcome.TRANSIENT,
    }
    failures = [r for r in caplog.records if "telemetry POST failed" in r.getMessage()]
    assert len(failures) == 4  # the lines were written: they just do not show the secrets
    for secret in (SECRET, TOKEN, base64.b64encode(f"user:{SECRET}".encode()).decode()):
        assert secret not in caplog.text

    client = client_class()
    for url in (urls["refused"], f"http://user:{SECRET}@[::1/x", f"ftp://user:{SECRET}@h/x"):
        with pytest.raises(TransportError) as failed:
            client.post(url, BODY, 0.5, headers={"Authorization": f"Bearer {TOKEN}"})
        assert SECRET not in str(failed.value)
        assert TOKEN not in str(failed.value)
    client.close()
