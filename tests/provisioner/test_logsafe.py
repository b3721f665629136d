"""Logging that never lets a secret through."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from provisioner import logsafe
from provisioner.errors import ConfigError
from provisioner.logsafe import REDACTED, SecretRedactor, redact, redact_patterns, setup_logging

TOKEN_SECRET = "7f3c2a9e-1111-2222-3333-444455556666"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBxZXhhbXBsZWV4YW1wbGVleGFtcGxlZXhhbXBsZWV4YQAAAJgAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    "text, secret, kept",
    [
        (
            f"Authorization: PVEAPIToken=root@pam!ci={TOKEN_SECRET}",
            TOKEN_SECRET,
            "PVEAPIToken=root@pam!ci=",
        ),
        (f"header PVEAPIToken root@pam!mytoken={TOKEN_SECRET}", TOKEN_SECRET, "root@pam!mytoken="),
        (
            "POST https://pve1:8006/api2/json/access/ticket username=root@pam&password=hunter2hunter2&realm=pam",
            "hunter2hunter2",
            "username=root@pam&password=",
        ),
        ("set password: s3cr3t-Pa55 for root", "s3cr3t-Pa55", "for root"),
        ("{'password': 'with spaces, and comma'}", "with spaces", "{'password': '"),
        ('{"root_password": "quo\\"ted"}', 'quo\\"ted', '"root_password": "'),
        (
            "Cookie: PVEAuthCookie=PVE%3Aroot%40pam%3A6561B1B0%3A%3AsigXYZ123; lang=en",
            "PVE%3Aroot",
            "lang=en",
        ),
        (
            "CSRFPreventionToken: 6561B1B0:Y2FmZWJhYmVjYWZl",
            "Y2FmZWJhYmVjYWZl",
            "CSRFPreventionToken:",
        ),
        (
            '{"data": {"ticket": "PVE:root@pam:6561B1B0::c2lnbmF0dXJl+/==", "username": "root@pam",'
            ' "CSRFPreventionToken": "6561B1B0:abcdEFGH"}}',
            "c2lnbmF0dXJl",
            '"username": "root@pam"',
        ),
        ('{"ticket":"PVE:root@pam:AAAA::sig"}', "PVE:root@pam:AAAA", '{"ticket":"'),
        ("token_secret=abc-123-def-456 node=pve1", "abc-123-def-456", "node=pve1"),
        (f"key:\n{PRIVATE_KEY}\nafter", "b3BlbnNzaC1rZXktdjEAAAAABG5v", "after"),
        ('{"key": "' + PRIVATE_KEY.replace("\n", "\\n") + '"}', "QyNTUxOQAAACBx", '"}'),
        ("truncated: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx", "MIIEpAIB", "truncated"),
        ("db at postgresql://prov:dbpass123@db:5432/prov", "dbpass123", "@db:5432/prov"),
        ("redis://:redispass99@localhost:6379/0", "redispass99", "localhost:6379"),
        ("Authorization: Bearer abcdefghijklmnop0123", "abcdefghijklmnop0123", "Bearer"),
    ],
)
def test_patterns_are_redacted(text: str, secret: str, kept: str) -> None:
    redacted = redact_patterns(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert kept in redacted
    assert redact_patterns(redacted) == redacted  # stable, no "[REDACTED]]"


@pytest.mark.parametrize(
    "text",
    [
        "CT 104 created on node pve1 with 2 cores, 512 MiB and tags provisioner",
        "GET /api2/json/nodes/pve1/lxc/104/status/current",
        "token id root@pam!ci has privileges VM.Allocate",
        "https://deb.debian.org/debian bookworm main",
        "user-supplied secrets: 3 stored",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_patterns(text) == text


def test_registered_secrets_are_redacted_anywhere() -> None:
    redactor = SecretRedactor()
    assert redactor.register("Zq8pLm2vXc9w")
    assert redactor.redact("xxZq8pLm2vXc9wyy") == f"xx{REDACTED}yy"
    assert redactor.redact("a=Zq8pLm2vXc9w, b=Zq8pLm2vXc9w") == f"a={REDACTED}, b={REDACTED}"
    # Other redactors and the process-wide one are independent.
    assert "Zq8pLm2vXc9w" in SecretRedactor().redact("Zq8pLm2vXc9w")


def test_registered_secrets_in_encoded_forms() -> None:
    redactor = SecretRedactor()
    redactor.register('p@ss w/rd&"x"')
    for text in (
        "p%40ss%20w%2Frd%26%22x%22",
        "p%40ss+w%2Frd%26%22x%22",
        '{"pw": "p@ss w/rd&\\"x\\""}',
    ):
        assert "ss w" not in redactor.redact(text).replace("%20", " ").replace("+", " ")
    redactor.register(PRIVATE_KEY)
    one_line = PRIVATE_KEY.splitlines()[1]
    assert redactor.redact(f"line: {one_line}") == f"line: {REDACTED}"


def test_longest_secret_wins() -> None:
    redactor = SecretRedactor()
    redactor.register("abcdefgh")
    redactor.register("abcdefghijkl")
    assert redactor.redact("abcdefghijkl") == REDACTED


def test_short_and_empty_values_are_not_registered() -> None:
    redactor = SecretRedactor(min_length=8)
    assert not redactor.register("root")
    assert not redactor.register("")
    assert not redactor.register(None)
    assert redactor.redact("root logged in as root") == "root logged in as root"
    assert redactor.register("12345678")


def test_module_level_redact_uses_the_process_registry() -> None:
    assert logsafe.register_secret("process-wide-secret-42")
    assert redact("leaked process-wide-secret-42?") == f"leaked {REDACTED}?"
    assert redact("ok", SecretRedactor()) == "ok"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, SecretRedactor]]:
    """A logger whose handler carries a fresh redactor; yields (logger, output, redactor)."""
    redactor = SecretRedactor()
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(redactor)
    logger = logging.getLogger("tests.logsafe.filter")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, output, redactor
    logger.removeHandler(handler)
    logger.propagate = True


def test_filter_redacts_percent_args(
    logged: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    log, output, redactor = logged
    redactor.register(TOKEN_SECRET)
    log.info("node %s token %s", "pve1", TOKEN_SECRET)
    log.info("%(node)s uses %(secret)s", {"node": "pve1", "secret": TOKEN_SECRET})
    log.info("login %s", {"username": "root@pam", "password": "hunter2hunter2"})
    text = output.getvalue()
    assert TOKEN_SECRET not in text and "hunter2hunter2" not in text
    assert f"node pve1 token {REDACTED}" in text
    assert f"pve1 uses {REDACTED}" in text
    assert "'username': 'root@pam'" in text


def test_filter_redacts_exception_tracebacks(
    logged: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    log, output, redactor = logged
    redactor.register(TOKEN_SECRET)
    try:
        try:
            raise KeyError(f"PVEAPIToken=root@pam!ci={TOKEN_SECRET}")
        except KeyError as inner:
            raise RuntimeError(
                f"login failed with {TOKEN_SECRET} password=hunter2hunter2"
            ) from inner
    except RuntimeError:
        log.exception("create failed for CT %d", 104)
    text = output.getvalue()
    assert "create failed for CT 104" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: login failed with" in text and "KeyError" in text
    assert TOKEN_SECRET not in text and "hunter2hunter2" not in text


def test_filter_keeps_records_and_clears_raw_exception(
    logged: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    _, _, redactor = logged
    try:
        raise ValueError("password=hunter2hunter2")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("arg",), None)
        import sys

        record.exc_info = sys.exc_info()
    record.stack_info = "Stack (most recent call last):\n  secret password=stackpass99"
    assert redactor.filter(record) is True
    assert record.getMessage() == "boom arg"
    assert record.exc_info is None  # no handler can render the raw traceback again
    assert record.exc_text and "hunter2hunter2" not in record.exc_text
    assert "ValueError" in record.exc_text
    assert "stackpass99" not in record.stack_info


def test_unformattable_arguments_do_not_raise(
    logged: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    log, output, redactor = logged
    redactor.register(TOKEN_SECRET)
    log.info("count %d", TOKEN_SECRET)
    assert "could not be formatted" in output.getvalue()
    assert TOKEN_SECRET not in output.getvalue()


@pytest.fixture
def clean_logging() -> Iterator[io.StringIO]:
    """Give the root logger one StringIO handler; restore everything afterwards."""
    root = logging.getLogger()
    saved_handlers = [(h, list(h.filters)) for h in root.handlers]
    saved_level = root.level
    saved_factory = logging.getLogRecordFactory()
    names = [*logsafe.NOISY_LOGGERS, "proxmoxer.core"]
    saved_levels = {name: logging.getLogger(name).level for name in names}
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root.handlers = [handler]
    yield output
    root.handlers = [h for h, _ in saved_handlers]
    for h, filters in saved_handlers:
        h.filters = filters
    root.setLevel(saved_level)
    logging.setLogRecordFactory(saved_factory)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def test_setup_logging(clean_logging: io.StringIO) -> None:
    logging.getLogger("proxmoxer.core").setLevel(logging.DEBUG)
    redactor = SecretRedactor()
    redactor.register(TOKEN_SECRET)
    assert setup_logging("debug", redactor) is redactor
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert redactor in root.handlers[0].filters
    for name in ("proxmoxer", "proxmoxer.core", "urllib3", "asyncssh"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name

    logging.getLogger("proxmoxer.core").info("POST /access/ticket {'password': 'x'}")
    logging.getLogger("app").debug("token %s", TOKEN_SECRET)
    output = clean_logging.getvalue()
    assert "proxmoxer" not in output
    assert f"app token {REDACTED}" in output


def test_setup_logging_covers_handlers_added_later(clean_logging: io.StringIO) -> None:
    redactor = SecretRedactor()
    redactor.register(TOKEN_SECRET)
    setup_logging(logging.INFO, redactor)
    setup_logging(logging.INFO, redactor)  # idempotent: one filter, one factory layer
    assert logging.getLogger().handlers[0].filters.count(redactor) == 1
    factory = logging.getLogRecordFactory()
    assert isinstance(factory, logsafe._RedactingRecordFactory)
    assert not isinstance(factory.inner, logsafe._RedactingRecordFactory)

    # Like rq's worker: a library logger with its own handler, not propagating.
    own = io.StringIO()
    logger = logging.getLogger("tests.logsafe.library")
    handler = logging.StreamHandler(own)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job args %s", {"password": TOKEN_SECRET})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert TOKEN_SECRET not in own.getvalue()
    assert REDACTED in own.getvalue()


def test_setup_logging_rejects_unknown_levels(clean_logging: io.StringIO) -> None:
    with pytest.raises(ConfigError, match="unknown log level 'loud'"):
        setup_logging("loud", SecretRedactor())
