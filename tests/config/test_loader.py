"""Config loading: typed results, and errors that name file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hoopy.config.loader import ConfigError, format_password_hash, load_config
from hoopy.config.model import LoginMode, UpstreamTLS
from hoopy.identity.principal import Principal
from hoopy.identity.roles import granted_targets
from hoopy.wire.handshake import caching_sha2_hash, native_password_hash

MINIMAL = """\
[[listeners]]
target = "app"
tcp = "127.0.0.1:3307"

[targets.app]
host = "db.internal"
login = "gateway_users"
user = "hoopy"
password_env = "APP_DB_PASSWORD"

[users.alice]
password_hash = "{hash}"
groups = ["dev"]

[roles.dev]
groups = ["dev"]
targets = ["app"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hoopy.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_sane_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.format(hash=format_password_hash(b"pw"))))
    target = cfg.targets["app"]
    assert (target.port, target.tls, target.login) == (
        3306,
        UpstreamTLS.REQUIRED,  # db.internal is off loopback
        LoginMode.GATEWAY_USERS,
    )
    assert target.server_public_key is None
    assert target.allow_local_infile is False
    assert cfg.listeners[0].name == "app" and cfg.listeners[0].tls is True
    assert cfg.gateway.state_dir == tmp_path / ".hoopy"
    assert cfg.users["alice"].native_hash == native_password_hash(b"pw")
    assert cfg.users["alice"].sha2_hash == caching_sha2_hash(b"pw")
    roles = cfg.roles.values()
    assert granted_targets(roles, Principal("alice", "gateway_user", ("dev",))) == {"app"}
    assert granted_targets(roles, Principal("bob", "gateway_user", ("other",))) == frozenset()


def test_user_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICE_PW", "from-env")
    text = MINIMAL.replace('password_hash = "{hash}"', 'password_env = "ALICE_PW"')
    cfg = load_config(write(tmp_path, text))
    assert cfg.users["alice"].sha2_hash == caching_sha2_hash(b"from-env")


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (
            ('host = "db.internal"', 'host = "db.internal"\nallow_local_infle = true'),
            7,
            "targets.app.allow_local_infle: unknown key",
        ),
        (
            ('login = "gateway_users"', 'login = "proxy"'),
            7,
            "targets.app.login: must be one of passthrough, gateway_users",
        ),
        (
            ('password_env = "APP_DB_PASSWORD"', 'password = "hunter2"'),
            9,
            "never written in the config",
        ),
        (('target = "app"', 'target = "nope"'), 2, "no target named 'nope'"),
        (('tcp = "127.0.0.1:3307"', 'tcp = "localhost"'), 3, "must look like HOST:PORT"),
        (('targets = ["app"]', 'targets = ["ap"]'), 17, "roles.dev.targets: no target named 'ap'"),
        (
            ('groups = ["dev"]\n\n[roles', 'groups = "dev"\n\n[roles'),
            13,
            "users.alice.groups: must be a list",
        ),
        (('host = "db.internal"', 'host = "db.internal"\ntls = "verify-ca"'), 7, "needs tls_ca"),
        (
            ('host = "db.internal"', 'host = "db.internal"\nport = true'),
            7,
            "port: must be an integer, not a boolean",
        ),
    ],
)
def test_errors_name_file_line_and_key(
    tmp_path: Path, edit: tuple[str, str], line: int, message: str
) -> None:
    text = MINIMAL.format(hash=format_password_hash(b"pw")).replace(*edit, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_bad_password_hash_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hoopy hash-password"):
        load_config(write(tmp_path, MINIMAL.format(hash="plaintext")))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[targets\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_missing_environment_secret_for_user_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('password_hash = "{hash}"', 'password_env = "HOOPY_TEST_UNSET_VAR"')
    with pytest.raises(ConfigError, match="HOOPY_TEST_UNSET_VAR is not set"):
        load_config(write(tmp_path, text))


def test_the_shipped_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOPY_CI_PASSWORD", "ci-pw")
    example = Path(__file__).resolve().parents[2] / "examples" / "hoopy.toml"
    cfg = load_config(example)
    assert {lst.name for lst in cfg.listeners} == {"app", "legacy", "agents"}
    assert cfg.targets["agents"].login is LoginMode.TOKENS
    assert set(cfg.issuers) == {"dev", "github"}
    assert cfg.users["alice"].sha2_hash == caching_sha2_hash(b"change-me")
    assert cfg.targets["legacy"].login is LoginMode.PASSTHROUGH
    assert cfg.targets["app"].guardrails == ("default",)
    assert cfg.roles["ci"].guardrails == {"app": ("ci-writes",)}
    assert [r.name for r in cfg.guardrails["ci-writes"].rules] == [
        "no-payments",
        "flag-bulk-updates",
    ]


TOKENS = """\
[[listeners]]
target = "app"
tcp = "127.0.0.1:3307"
allow_cleartext_password = true

[targets.app]
login = "tokens"
user = "hoopy"
password_env = "APP_DB_PASSWORD"

[issuers.gh]
issuer = "https://token.actions.githubusercontent.com"
audience = ["hoopy", "https://github.com/acme"]
jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
groups_claim = "realm_access.roles"

[roles.deploy]
issuers = ["gh"]
targets = ["app"]

[roles.deploy.claims]
repository = "acme/*"
ref = ["refs/heads/main", "refs/tags/v*"]
"""


def test_token_targets_issuers_and_claim_roles(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TOKENS))
    assert cfg.targets["app"].login is LoginMode.TOKENS
    issuer = cfg.issuers["gh"]
    assert issuer.audience == ("hoopy", "https://github.com/acme")
    assert issuer.groups_claim == "realm_access.roles"
    role = cfg.roles["deploy"]
    assert role.issuers == ("gh",)
    assert dict(role.claims) == {
        "repository": ("acme/*",),
        "ref": ("refs/heads/main", "refs/tags/v*"),
    }
    assert cfg.listeners[0].allow_cleartext_password


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('tcp = "127.0.0.1:3307"', 'tcp = "0.0.0.0:3307"'),
            "only allowed on a loopback tcp address",
        ),
        (('jwks_url = "https://token', 'jwks_url = "http://token'), "must be https://"),
        (('issuers = ["gh"]', 'issuers = ["gitlab"]'), "no issuer named 'gitlab'"),
        (('groups_claim = "realm_access.roles"', 'algorithms = ["HS256"]'), "issuers.gh"),
        (
            ("[issuers.gh]", '[issuers.gh]\njwks_file = "keys.json"'),
            "exactly one of jwks_file and jwks_url",
        ),
    ],
)
def test_token_config_errors(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, TOKENS.replace(*edit, 1)))


def test_tokens_need_an_issuer(tmp_path: Path) -> None:
    text = TOKENS[: TOKENS.index("[issuers.gh]")] + '[roles.x]\ngroups = ["a"]\ntargets = ["app"]\n'
    with pytest.raises(ConfigError, match=r"need at least one \[issuers\.NAME\]"):
        load_config(write(tmp_path, text))


def test_audit_is_on_by_default_in_the_state_directory(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.format(hash=format_password_hash(b"pw"))))
    assert cfg.audit is not None
    assert cfg.audit.directory == tmp_path / ".hoopy" / "audit"
    assert (cfg.audit.durability, cfg.audit.redact) == ("os", ("secrets",))
    assert cfg.audit.max_value_bytes == 16 * 1024
    assert cfg.audit.max_sql_bytes == 256 * 1024


def test_audit_settings_and_switching_it_off(tmp_path: Path) -> None:
    base = MINIMAL.format(hash=format_password_hash(b"pw"))
    cfg = load_config(
        write(
            tmp_path,
            base
            + '\n[audit]\ndirectory = "trail"\ndurability = "strict"\n'
            + 'redact = ["personal", "jwt"]\nmax_value_bytes = 100\nmax_sql_bytes = 5000\n'
            + "reopen_interval = 0.25\n",
        )
    )
    assert cfg.audit is not None
    assert cfg.audit.max_sql_bytes == 5000
    assert cfg.audit.reopen_interval == 0.25
    assert cfg.audit.directory == tmp_path / "trail"
    assert (cfg.audit.durability, cfg.audit.redact, cfg.audit.max_value_bytes) == (
        "strict",
        ("personal", "jwt"),
        100,
    )
    assert load_config(write(tmp_path, base + "\n[audit]\nenabled = false\n")).audit is None
    for bad, message in (
        ("max_value_bytes = 0", "max_value_bytes"),
        ("reopen_interval = 0", "reopen_interval"),
        ('redact = ["secret"]', "unknown redaction kinds"),
        ('redact = "secrets"', "redact"),
        ("enabled = 1", "enabled"),
        ("redact_sensitive = true", "redact_sensitive"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, base + f"\n[audit]\n{bad}\n"))


def test_commands_that_only_read_the_config_need_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = MINIMAL.replace('password_hash = "{hash}"', 'password_env = "ALICE_PW"')
    monkeypatch.delenv("ALICE_PW", raising=False)
    with pytest.raises(ConfigError, match="ALICE_PW"):
        load_config(write(tmp_path, text))
    cfg = load_config(write(tmp_path, text), read_secrets=False)
    assert cfg.audit is not None and "alice" in cfg.users


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ('host = "db.internal"', UpstreamTLS.REQUIRED),
        ('host = "10.0.0.5"', UpstreamTLS.REQUIRED),
        ('host = "2001:db8::1"', UpstreamTLS.REQUIRED),
        ('host = "127.0.0.1"', UpstreamTLS.PREFERRED),
        ('host = "127.0.0.9"', UpstreamTLS.PREFERRED),
        ('host = "::1"', UpstreamTLS.PREFERRED),
        ('host = "localhost"', UpstreamTLS.PREFERRED),
        ('unix_socket = "/run/mysqld/mysqld.sock"', UpstreamTLS.PREFERRED),
        ('host = "db.internal"\ntls = "preferred"', UpstreamTLS.PREFERRED),
        ('host = "127.0.0.1"\ntls = "required"', UpstreamTLS.REQUIRED),
        ('host = "db.internal"\ntls = "off"', UpstreamTLS.OFF),
    ],
)
def test_upstream_tls_is_required_by_default_off_loopback(
    tmp_path: Path, address: str, expected: UpstreamTLS
) -> None:
    text = MINIMAL.format(hash=format_password_hash(b"pw")).replace('host = "db.internal"', address)
    assert load_config(write(tmp_path, text)).targets["app"].tls is expected


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_server_public_key_is_checked_at_start(tmp_path: Path) -> None:
    base = MINIMAL.format(hash=format_password_hash(b"pw"))
    text = base.replace('host = "db.internal"', 'host = "db.internal"\nserver_public_key = "k.pem"')
    (tmp_path / "k.pem").write_bytes(
        _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    path = write(tmp_path, text)
    assert load_config(path).targets["app"].server_public_key == tmp_path / "k.pem"
    (tmp_path / "k.pem").write_bytes(_public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match=r"server_public_key: .*not an RSA public key") as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:7:")
    (tmp_path / "k.pem").write_text("ssh-rsa AAAA...")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_config(path)
    (tmp_path / "k.pem").unlink()
    with pytest.raises(ConfigError, match="server_public_key: cannot read"):
        load_config(path)
    # Commands that only read the config (audit queries) do not need the key file.
    assert load_config(path, read_secrets=False).targets["app"].server_public_key is not None


def test_max_token_lifetime(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, TOKENS)).issuers["gh"].max_token_lifetime == 86400
    edit = ('groups_claim = "realm_access.roles"', "max_token_lifetime = 600")
    cfg = load_config(write(tmp_path, TOKENS.replace(*edit, 1)))
    assert cfg.issuers["gh"].max_token_lifetime == 600
    for bad, message in (
        ("0", "must be greater than zero"),
        ("-5", "must be greater than zero"),
        ("inf", "finite"),
        ("nan", "must be greater than zero"),
        ("true", "not a boolean"),
        ('"1h"', "must be a number"),
    ):
        text = TOKENS.replace(edit[0], f"max_token_lifetime = {bad}", 1)
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, text))


GUARDED = MINIMAL.format(hash=format_password_hash(b"pw")).replace(
    "[targets.app]", '[targets.app]\nguardrails = ["mine", "default"]'
)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ("", "targets.app.guardrails: no rule set named 'mine'"),
        ("[guardrails.default]\n", "guardrails.default: the name 'default' is the built-in set"),
        (
            '[guardrails.mine]\ndefault = "block"\n',
            "guardrails.mine.default: must be one of allow, log, review, deny, got 'block'",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\n',
            "rule 'r' has no condition, so it matches every statement",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\npattern = "("\n',
            "guardrails.mine.rules.pattern: is not a valid regular expression",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\nwhere = "absent"\n',
            "must be one of missing, trivial, missing_or_trivial, present",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\nkinds = ["delete"]\n'
            'tables = "x.y"\nlimt = true\n',
            "guardrails.mine.rules.limt: unknown key",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\nkinds = ["delet"]\n',
            "'delet' is not a statement kind or group hoopy reports (did you mean delete",
        ),
        (
            '[[guardrails.mine.rules]]\nname = "r"\naction = "deny"\nkinds = ["creat_*"]\n',
            "'creat_*' is not a statement kind",
        ),
    ],
)
def test_guardrail_config_errors_are_located_and_say_why(
    tmp_path: Path, sets: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, GUARDED + "\n" + sets))


def test_role_guardrails_per_target(tmp_path: Path) -> None:
    text = (
        GUARDED
        + '\n[guardrails.mine]\ndefault = "log"\n'
        + '[roles.r]\ngroups = ["g"]\ntargets = ["app"]\n[roles.r.guardrails]\napp = ["mine"]\n'
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.roles["r"].guardrails == {"app": ("mine",)}
    assert cfg.targets["app"].guardrails == ("mine", "default")
    bad = text.replace('app = ["mine"]', 'other = ["mine"]')
    with pytest.raises(ConfigError, match="is not one of this role's targets"):
        load_config(write(tmp_path, bad))


def _with_gateway(extra: str, tail: str = "") -> str:
    return "[gateway]\n" + extra + "\n\n" + MINIMAL.format(hash=format_password_hash(b"pw")) + tail


def test_workers_default_auto_and_approvals(tmp_path: Path) -> None:
    from hoopy.config.loader import available_cores

    cfg = load_config(write(tmp_path, MINIMAL.format(hash=format_password_hash(b"pw"))))
    assert cfg.gateway.workers == 1 and cfg.approvals is not None
    cfg = load_config(write(tmp_path, _with_gateway('workers = "auto"')))
    assert cfg.gateway.workers == available_cores() >= 1
    # Several workers keep approvals (they share the store), on by default as for one...
    cfg = load_config(write(tmp_path, _with_gateway("workers = 3")))
    assert cfg.gateway.workers == 3 and cfg.approvals is not None
    cfg = load_config(
        write(tmp_path, _with_gateway("workers = 3", "\n[approvals]\nmode = 'retry'\n"))
    )
    assert cfg.approvals is not None and cfg.approvals.defaults.mode.value == "retry"
    # ...and off when the file says so.
    cfg = load_config(
        write(tmp_path, _with_gateway("workers = 3", "\n[approvals]\nenabled = false\n"))
    )
    assert cfg.gateway.workers == 3 and cfg.approvals is None


@pytest.mark.parametrize("value", ["0", "-1", "257", "1.5", "true", '"many"', '"AUTO"'])
def test_workers_must_be_a_count_or_auto(tmp_path: Path, value: str) -> None:
    with pytest.raises(
        ConfigError, match=r"gateway\.workers: must be a whole number from 1 to 256"
    ):
        load_config(write(tmp_path, _with_gateway(f"workers = {value}")))
