"""Settings: the environment, the defaults, the paths, and the saved decision.

A :class:`Tool` holds one tool's settings.  :data:`NAT`, the default tool (the
NeMo Agent Toolkit), reads this module's live, assignable attributes, as code
written for the original expects: ``TELEMETRY_ENABLED`` (resolved on first read,
so ``import nat_telemetry`` never reads the consent file; the prompt may flip it),
``NAT_TELEMETRY_ENDPOINT``, ``NAT_TELEMETRY_DRY_RUN`` and ``SESSION_PREFIX``.

The rules, in order: ``DO_NOT_TRACK`` set (:func:`is_set`) turns every tool off;
then the tool's ``*_TELEMETRY_ENABLED`` (:func:`is_truthy`); then a CI run is off;
then the consent file; then off.

A command line loads this module at exit, so paths, URLs and the consent file are
read by hand, without pathlib, urllib.parse or a TOML parser; text other than what
:mod:`.consent` writes goes to tomllib/tomli, and is "never asked" without one.
"""

from __future__ import annotations

import errno
import os
import stat

from . import _rules

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    # (state, path, exists, consent, prompt_version, why): see consent.ConsentRecord.
    Record = tuple[str, str, bool, str | None, str | None, str]

CLIENT_ID = "184482118588404"
NAT_TELEMETRY_VERSION = "nat-telemetry/1.0"
STDOUT_ENDPOINT_SENTINEL = "stdout"
DEFAULT_NAT_TELEMETRY_ENDPOINT = ""

TELEMETRY_ENV_VAR = "NAT_TELEMETRY_ENABLED"
ENDPOINT_ENV_VAR = "NAT_TELEMETRY_ENDPOINT"
DRY_RUN_ENV_VAR = "NAT_TELEMETRY_DRY_RUN"
SESSION_PREFIX_ENV_VAR = "NAT_SESSION_PREFIX"
CONSENT_FILE_ENV_VAR = "NAT_TELEMETRY_CONSENT_FILE"
TOKEN_ENV_VAR = "NAT_TELEMETRY_TOKEN"
SPOOL_DIR_ENV_VAR = "NAT_TELEMETRY_SPOOL_DIR"
DO_NOT_TRACK_ENV_VAR = "DO_NOT_TRACK"
# Set by the common CI services (any value but an "off" one counts).
CI_ENV_VARS = (
    "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL", "TF_BUILD",
    "TEAMCITY_VERSION", "TRAVIS", "CODEBUILD_BUILD_ID", "BITBUCKET_BUILD_NUMBER",
    "BUILD_ID", "DRONE", "APPVEYOR", "SEMAPHORE", "BITRISE_IO", "HEROKU_TEST_RUN_ID",
)

# Bump whenever the prompt's text changes what the user agrees to: earlier
# "enabled" answers are asked again (see parse_consent), a "no" stands.
PROMPT_VERSION = "1.0"
# The real file is a few hundred bytes; a far larger one is not ours.
MAX_CONSENT_FILE_BYTES = 64 * 1024
ENABLED, DISABLED, NEVER_ASKED = "enabled", "disabled", "never_asked"

# A handler's defaults (see handler.NATTelemetryHandler).
DEFAULT_FLUSH_INTERVAL_SECONDS: float = 120.0
DEFAULT_MAX_QUEUE_SIZE: int = 50
DEFAULT_MAX_RETRIES: int = 3
DEFAULT_REQUEST_TIMEOUT_SECONDS: float = 2.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: float = 2.0
DEFAULT_MAX_BUFFER_SIZE: int = 10_000
DEFAULT_MAX_DLQ_SIZE: int = 1_000
DEFAULT_MAX_BATCH_SIZE: int = 500

_TRUTHY = frozenset({"1", "true", "yes"})
_OFF = frozenset({"", "0", "false", "no", "off"})
_SPOOL_OFF = _OFF | {"none", "disabled"}


def is_truthy(value: str | None) -> bool:
    """``1``, ``true`` or ``yes``, in any case, surrounding blanks ignored."""
    return value is not None and value.strip().lower() in _TRUTHY


def is_set(value: str | None) -> bool:
    """Set to anything but ``""``, ``0``, ``false``, ``no`` or ``off`` (any case):
    how ``DO_NOT_TRACK`` and the CI variables are read ("set means on")."""
    return value is not None and value.strip().lower() not in _OFF


# os.uname, not platform.uname(), which may run `uname -p` in a subprocess.
CPU_ARCHITECTURE: str = (os.uname().machine if hasattr(os, "uname")
                         else __import__("platform").machine())
NAT_TELEMETRY_ENDPOINT: str = os.environ.get(ENDPOINT_ENV_VAR, DEFAULT_NAT_TELEMETRY_ENDPOINT)
NAT_TELEMETRY_DRY_RUN: bool = is_truthy(os.environ.get(DRY_RUN_ENV_VAR))
SESSION_PREFIX: str | None = os.environ.get(SESSION_PREFIX_ENV_VAR) or None


def do_not_track() -> bool:
    """``DO_NOT_TRACK`` is set (see :func:`is_set`)."""
    return is_set(os.environ.get(DO_NOT_TRACK_ENV_VAR))


def ci_env_var() -> str | None:
    """The first CI variable that says this is a CI run, or None."""
    return next((name for name in CI_ENV_VARS if is_set(os.environ.get(name))), None)


def environment_decision(variable: str = TELEMETRY_ENV_VAR) -> tuple[bool, str, str] | None:
    """``(enabled, rule, detail)`` when the environment alone decides, else None:
    ``DO_NOT_TRACK`` (off), ``variable`` when set, a CI run (off)."""
    if do_not_track():
        return False, "DO_NOT_TRACK", f"{DO_NOT_TRACK_ENV_VAR}={os.environ[DO_NOT_TRACK_ENV_VAR]!r}"
    setting = os.environ.get(variable)
    if setting is not None:
        return is_truthy(setting), "environment", f"{variable}={setting!r}"
    ci = ci_env_var()
    if ci is not None:
        return False, "CI", f"{ci} is set: a CI run, where only {variable} can turn telemetry on"
    return None


# ------------------------------------------------------------------ paths

def _normalized(path: str) -> str:
    """``str(pathlib.Path(path))``, without importing pathlib on POSIX."""
    if os.sep != "/":
        from pathlib import PurePath

        return str(PurePath(path))
    root = "//" if path.startswith("//") and not path.startswith("///") else (
        "/" if path.startswith("/") else "")
    return root + "/".join(part for part in path.split("/") if part and part != ".") or "."


def _expanded(path: str, environ: Mapping[str, str] = os.environ) -> str:
    """``str(pathlib.Path(path).expanduser())`` (``~`` from ``environ``'s HOME),
    raising RuntimeError as it does."""
    path = _normalized(path)
    if not path.startswith("~"):
        return path
    first, _, rest = path.partition(os.sep)
    home = (environ.get("HOME") if first == "~" else None) or os.path.expanduser(first)
    if home.startswith("~"):  # no home folder known (or no such user)
        raise RuntimeError("Could not determine home directory.")
    return _normalized(os.path.join(home, rest) if rest else home)


def _xdg(variable: str, fallback: str, environ: Mapping[str, str]) -> str | None:
    """``$variable`` when absolute (the XDG spec ignores relative ones), else
    ``~/fallback``; None without a home folder."""
    base = environ.get(variable, "")
    if base and os.path.isabs(base):
        return base
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, fallback) if home and os.path.isabs(home) else None


# ---------------------------- endpoints: "" sends nothing, "stdout" prints, URLs by one rule

_SCHEMES = ("http", "https", "otlp+http", "otlp+https")
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_IPV6 = frozenset("0123456789abcdefABCDEF:.%")
LOGS_PATH = "/v1/logs"


def _cut(rest: str, marks: str = "/?#") -> int:
    """Where the authority ends in what follows ``scheme://``."""
    return min((i for i in map(rest.find, marks) if i >= 0), default=len(rest))


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\r``, ``\\x1b``...), fit to print."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def redact(endpoint: str) -> str:
    """``endpoint`` fit to print: ``user:password@`` as ``***@``, a query as ``?***``,
    no fragment, control characters escaped."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    cut = _cut(rest)
    authority, tail = rest[:cut], rest[cut:].partition("#")[0]
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    if "?" in tail:
        tail = tail.partition("?")[0] + "?***"
    return printable(f"{scheme}{sep}{authority}{tail}")


def _split(rest: str) -> tuple[str, str, str] | str:
    """``(host, port, path)`` of what follows ``scheme://``, or why it cannot be read."""
    cut = _cut(rest)
    hostport, path = rest[:cut].rpartition("@")[2], rest[cut:]
    if hostport.startswith("["):
        address, bracket, after = hostport[1:].partition("]")
        if not bracket or not address or not set(address) <= _IPV6 or (
                after and not after.startswith(":")):
            return "invalid IPv6 address"
        return address, after[1:], path
    host, _, port = hostport.partition(":")
    return (host, port, path) if ":" not in port else "bad port"


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` can never be sent to, or None when it can (or is ``""``/``stdout``):
    a control character or a space anywhere, non-ASCII outside the host, or a host no
    client can encode, is a configuration error."""
    if endpoint in ("", STDOUT_ENDPOINT_SENTINEL):
        return None
    shown = redact(endpoint)
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        return (f"endpoint {shown!r} is not one this client can send to: use an "
                f"{', '.join(s + '://' for s in _SCHEMES)} URL, 'stdout', or nothing")
    if any(c <= " " or c == "\x7f" for c in endpoint):
        return f"endpoint {shown!r} contains white space or control characters"
    parts = _split(rest)
    if isinstance(parts, str):
        return f"endpoint {shown!r} is not a valid URL: {parts}"
    host, port, path = parts
    if not host:
        return f"endpoint {shown!r} has no host"
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        return f"endpoint {shown!r} is not a valid URL: bad port"
    if not path.isascii() or not rest[:_cut(rest)].rpartition("@")[0].isascii():
        return f"endpoint {shown!r} has characters outside ASCII: percent-encode them"
    if not set(host) <= _HOST_CHARACTERS and not set(host) <= _IPV6:
        try:
            host.encode("idna")
        except UnicodeError:
            return f"endpoint {shown!r} has a host name no client can encode"
    return None


def destination(endpoint: str, dry_run: bool) -> str:
    """What sending to ``endpoint`` means, in one word: ``"none"``, ``"stdout"``,
    ``"unusable"``, ``"dry-run"``/``"otlp-dry-run"`` (a URL, with ``dry_run``),
    ``"otlp"`` (``otlp+http(s)://``) or ``"nemo"`` (a POST of the NeMo envelope).
    A dry run without an endpoint still shows what would be sent."""
    if endpoint in ("", STDOUT_ENDPOINT_SENTINEL):
        return "dry-run" if dry_run and not endpoint else endpoint or "none"
    if endpoint_problem(endpoint) is not None:
        return "unusable"
    otlp = endpoint.partition("://")[0].lower().startswith("otlp+")
    if dry_run:
        return "otlp-dry-run" if otlp else "dry-run"
    return "otlp" if otlp else "nemo"


def host_of(endpoint: str) -> str | None:
    """The host a usable URL endpoint sends to (for the consent prompt), or None."""
    if endpoint_problem(endpoint) is not None or "://" not in endpoint:
        return None
    return _split(endpoint.partition("://")[2])[0].lower()  # a usable URL always splits


def logs_url(endpoint: str) -> str:
    """The ``http(s)://`` URL OTLP logs are POSTed to for an ``otlp+http(s)://`` endpoint:
    its own path, or ``/v1/logs`` when it has none; the query kept, no fragment."""
    scheme, _, rest = endpoint.partition("://")
    rest = rest.partition("#")[0]
    cut = _cut(rest, "/?")
    path, mark, query = rest[cut:].partition("?")
    if not path.strip("/"):
        path = LOGS_PATH
    return f"{scheme.lower().partition('+')[2]}://{rest[:cut]}{path}{mark}{query}"


def destination_id(endpoint: str, token: str = "") -> str:
    """A short name for where a batch goes (the endpoint and the credentials sent with
    it), for the spool: a hash, so no credential is ever written in clear.  FNV-1a
    (64 bits), written here: a hash module would cost a command line's exit a
    library load, and the name needs no more than to tell destinations apart."""
    value = 0xCBF29CE484222325
    for byte in f"{endpoint}\n{token}".encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


# ------------------------------------------------------------------ trust

# The variables that name the certificates to trust, strongest first.
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def ca_location(environ: Mapping[str, str] | None = None,
                search_path: Sequence[str] | None = None) -> str | None:
    """The certificates every HTTPS request trusts (a file or a folder): the first of
    :data:`CA_VARIABLES` set, else certifi's bundle when installed (looked for on
    ``search_path``, ``sys.path`` by default, not imported), else None for the
    system's store."""
    env = os.environ if environ is None else environ
    for name in CA_VARIABLES:
        if env.get(name):
            return env[name]
    if search_path is None:
        import sys

        search_path = sys.path
    for folder in search_path:
        candidate = os.path.join(folder or os.curdir, "certifi", "cacert.pem")
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


# ------------------------------------------------------------ the consent file

def open_regular(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of ``path`` when it is a regular file; ``IsADirectoryError`` for
    anything else.  Opened ``O_NONBLOCK`` and checked with ``fstat``, so a FIFO or a
    device planted at the path never holds the caller."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0), mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", os.path.basename(path))
    return fd


def read_text(path: str) -> str | None:
    """The file's text; None when it is not a regular file of a sane size.  Raises
    ``OSError`` and ``UnicodeDecodeError``."""
    try:
        fd = open_regular(path)
    except IsADirectoryError:
        return None
    with open(fd, "rb") as file:  # one byte more than the cap tells a file too large
        data = file.read(MAX_CONSENT_FILE_BYTES + 1)
    return None if len(data) > MAX_CONSENT_FILE_BYTES else data.decode("utf-8")


_BARE_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def fast_loads(text: str) -> dict[str, Any] | None:
    """The document, when ``text`` holds only the lines the writer uses (LF only:
    blank lines, comments, ``[telemetry]`` once, then ``key = "value"`` with a bare
    key, no escapes, an optional comment), read as a TOML parser reads them; else
    None, which means "ask a TOML parser", never "invalid"."""
    document: dict[str, Any] = {}
    table: dict[str, str] | None = None
    for raw in text.split("\n"):
        line = raw.strip(" ")
        if not line.isprintable():  # tabs, CR, control characters...
            return None
        if not line or line[0] == "#":
            continue
        if line == "[telemetry]" and "telemetry" not in document:
            table = document["telemetry"] = {}
            continue
        key, equals, rest = line.partition("=")
        key, rest = key.rstrip(" "), rest.lstrip(" ")
        if (table is None or not equals or not key or key.strip(_BARE_KEY) or key in table
                or not rest.startswith('"')):
            return None
        end = rest.find('"', 1)
        value, after = rest[1:end], rest[end + 1:].lstrip(" ")
        if end < 0 or "\\" in value or (after and after[0] != "#"):
            return None
        table[key] = value
    return document


class _NoParser(ValueError):
    """Text the fast reader declines, and no TOML parser to ask."""


def toml_loads(text: str) -> dict[str, Any]:
    """``text`` as a TOML parser reads it: the fast reader, else tomllib or tomli.
    ValueError when it is not TOML, or when no parser is there for it."""
    document = fast_loads(text)
    if document is not None:
        return document
    try:
        import tomllib as toml  # Python 3.11+
    except ImportError:
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ImportError:
            raise _NoParser("not in the form this package writes, and no TOML parser "
                            "(tomllib, tomli) to read it") from None
    loaded: dict[str, Any] = toml.loads(text)
    return loaded


def parse_consent(text: str) -> tuple[str, str | None, str | None, str]:
    """``(state, consent, prompt_version, why)`` for a consent file's text, the
    prompt-version gate applied: a "no" stands whatever wording it answered, a
    "yes" to other wording is asked again, anything else counts as never asked."""
    try:
        table = toml_loads(text).get("telemetry")
    except _NoParser as exc:
        return NEVER_ASKED, None, None, f"{exc}: treated as never asked"
    except Exception:
        return NEVER_ASKED, None, None, ("not understood (not valid TOML), ignored: "
                                         "treated as never asked")
    if not isinstance(table, dict):
        return NEVER_ASKED, None, None, "no [telemetry] table: ignored"
    consent, version = table.get("consent"), table.get("prompt_version")
    consent = consent if isinstance(consent, str) else None
    version = version if isinstance(version, str) else None
    if consent == DISABLED:
        return DISABLED, consent, version, ("" if version == PROMPT_VERSION else
                                            "a 'no' stays valid across prompt versions")
    if consent == ENABLED and version == PROMPT_VERSION:
        return ENABLED, consent, version, ""
    if consent == ENABLED:
        return (NEVER_ASKED, consent, version,
                f"a 'yes' given under prompt version {version!r}, not the current "
                f"{PROMPT_VERSION!r}, no longer counts: you will be asked again")
    return NEVER_ASKED, consent, version, "not understood, ignored: treated as never asked"


# ------------------------------------------------------------------ tools

class Tool:
    """One tool's settings: its name, variables, files and decision (see
    :class:`~.track.ToolTelemetry`).  The endpoint, the dry run and the session prefix
    are read once, here; the decision on first use."""

    def __init__(self, name: str, *, env_prefix: str | None = None, endpoint: str = "",
                 version: str | None = None, nemo_source: str = "undefined",
                 token: str = "") -> None:
        if not (isinstance(name, str) and _rules.is_tool_name(name)):
            raise ValueError(f"a tool's name is 1 to 64 lowercase letters, digits, '-' and "
                             f"'_', starting with a letter or digit: {name!r}")
        if version is not None and not (isinstance(version, str) and _rules.is_version(version)):
            raise ValueError(f"a tool's version is 1 to 64 letters, digits, '.', '_', '+', "
                             f"'!' or '-', such as '2.4.1': {version!r}")
        prefix = name.upper().replace("-", "_") if env_prefix is None else env_prefix
        if not (prefix and prefix.isascii() and prefix.replace("_", "a").isalnum()):
            raise ValueError(f"an environment prefix is letters, digits and '_': {prefix!r}")
        self.name, self.env_prefix, self.version = name, prefix, version
        self.nemo_source, self._token = nemo_source, token
        self._endpoint = os.environ.get(self.var("ENDPOINT"), endpoint)
        self._dry_run = is_truthy(os.environ.get(self.var("DRY_RUN")))
        self._session_prefix = os.environ.get(f"{prefix}_SESSION_PREFIX") or None
        self._enabled: bool | None = None
        self._refused_prefixes: set[str] = set()

    def var(self, setting: str) -> str:
        """The name of this tool's variable for ``setting`` (``ENDPOINT``...)."""
        return f"{self.env_prefix}_TELEMETRY_{setting}"

    @property  # these three: the default tool reads the module's attributes instead
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def enabled(self) -> bool:
        """This process's decision: resolved on first read, assignable."""
        if self._enabled is None:
            self._enabled = self.decide()[0]
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)

    @property
    def session_prefix(self) -> str | None:
        """The session prefix, when it can be sent (a bad one is said once, and ignored)."""
        prefix = self._prefix_setting()
        if prefix is None or _rules.is_token(prefix):  # 1 to 64 of a session id's characters
            return prefix
        if prefix not in self._refused_prefixes:
            self._refused_prefixes.add(prefix)
            from . import _process

            _process.warning("%s is ignored: a session prefix is at most 64 letters, digits, "
                             "'-', '_', '.' or ':'", f"{self.env_prefix}_SESSION_PREFIX")
        return None

    def _prefix_setting(self) -> str | None:
        return self._session_prefix

    def session_id(self, session_id: str) -> str:
        """``session_id`` as sent: with the session prefix in front, when there is one."""
        prefix = self.session_prefix
        return f"{prefix}{session_id}" if prefix else session_id

    def token(self) -> str:
        """The bearer token: ``*_TELEMETRY_TOKEN``, else the one given ("" for none)."""
        return os.environ.get(self.var("TOKEN"), "").strip() or self._token

    def consent_file(self, consent_file: str | os.PathLike[str] | None = None) -> str:
        """``consent_file`` when given and non-empty; else ``*_TELEMETRY_CONSENT_FILE``;
        else the XDG config folder's; ``~`` expanded.  RuntimeError without a home."""
        given = "" if consent_file is None else os.fspath(consent_file)
        if not isinstance(given, str):
            raise TypeError(f"expected a str path, got {type(given).__name__}")
        given = given or os.environ.get(self.var("CONSENT_FILE"), "")
        if given:
            return _expanded(given)
        base = _xdg("XDG_CONFIG_HOME", ".config", os.environ)
        if base is None:
            raise RuntimeError("Could not determine home directory.")
        return _normalized(os.path.join(base, self.name, "telemetry.toml"))

    def spool_dir(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The spool folder; None without a home, or when ``*_TELEMETRY_SPOOL_DIR``
        turns it off (``off``, ``none``, ``0``, ``false``, ``no``, ``disabled``)."""
        env = os.environ if environ is None else environ
        chosen = env.get(self.var("SPOOL_DIR"), "").strip()
        if chosen:
            if chosen.lower() in _SPOOL_OFF:
                return None
            try:
                return os.path.abspath(_expanded(chosen, env))
            except RuntimeError:  # "~" with no home folder: no spool, not "./~"
                return None
        base = _xdg("XDG_STATE_HOME", os.path.join(".local", "state"), env)
        return None if base is None else os.path.join(base, self.name, "telemetry-spool")

    def read_consent(self, consent_file: str | os.PathLike[str] | None = None) -> Record:
        """What the consent file says and counts as; never raises."""
        try:
            path = self.consent_file(consent_file)
        except Exception as exc:  # e.g. no home folder
            return NEVER_ASKED, "", False, None, None, f"no consent file location: {exc}"
        try:
            text = read_text(path)
        except FileNotFoundError:
            return NEVER_ASKED, path, False, None, None, "no decision saved"
        except OSError as exc:
            return (NEVER_ASKED, path, True, None, None,
                    f"cannot be read ({exc.strerror or type(exc).__name__}): "
                    "treated as never asked")
        except UnicodeDecodeError:
            text = "\x00"  # not text: parse_consent says so
        if text is None:
            return (NEVER_ASKED, path, True, None, None,
                    "not a regular file of a sane size: treated as never asked")
        state, consent, version, why = parse_consent(text)
        return state, path, True, consent, version, why

    def decide(self, consent_file: str | os.PathLike[str] | None = None
               ) -> tuple[bool, str, str]:
        """``(enabled, rule, detail)``: the environment's rules, the consent file, then off."""
        decided = environment_decision(self.var("ENABLED"))
        if decided is not None:
            return decided
        state, path = self.read_consent(consent_file)[:2]
        if state != NEVER_ASKED:
            return state == ENABLED, "consent file", path
        return False, "default", "never asked"

    def refused_since(self) -> bool:
        """A decision taken elsewhere now says no (``DO_NOT_TRACK``, the variable, a
        saved "no"): read again before each batch is sent or spooled."""
        enabled, rule, _ = self.decide()
        return not enabled and rule != "default"

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, env_prefix={self.env_prefix!r})"


class _DefaultTool(Tool):
    """The NeMo Agent Toolkit: its values are this module's live attributes."""

    @property
    def endpoint(self) -> str:
        return NAT_TELEMETRY_ENDPOINT

    @property
    def dry_run(self) -> bool:
        return NAT_TELEMETRY_DRY_RUN

    @property
    def enabled(self) -> bool:
        value = globals().get("TELEMETRY_ENABLED")
        return bool(__getattr__("TELEMETRY_ENABLED") if value is None else value)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        global TELEMETRY_ENABLED
        TELEMETRY_ENABLED = bool(value)

    def _prefix_setting(self) -> str | None:
        return SESSION_PREFIX


NAT: Tool = _DefaultTool("nat", nemo_source="agent_toolkit")


TELEMETRY_ENABLED: bool  # resolved on first read by __getattr__ below


def __getattr__(name: str) -> object:
    # Called only while TELEMETRY_ENABLED is unset: resolved once, then stored,
    # so later reads are plain attribute lookups.
    if name == "TELEMETRY_ENABLED":
        return globals().setdefault(name, NAT.decide()[0])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
