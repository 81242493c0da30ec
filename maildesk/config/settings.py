"""Daemon settings from MAILDESK_* environment variables (and a .env file)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from maildesk.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILDESK_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Path("data")
    database_url: str = ""  # default derived from data_dir
    smtp_listen: str = "127.0.0.1:8025"
    support_address: str = "support@localhost"  # comma-separated list allowed
    outbound: str = ""  # default derived from data_dir
    imap_url: str = ""
    imap_password_file: Path | None = None
    imap_poll_seconds: float = 60.0
    imap_done_folder: str = "Processed"
    rules: Path = Path("rules.yaml")
    sla: Path = Path("sla.yaml")
    templates: Path = Path("templates")
    secret: str = ""
    metrics_listen: str = "127.0.0.1:9108"
    language: str = "en"
    max_message_bytes: int = 25 * 1024 * 1024
    parse_timeout_seconds: float = 10.0
    auto_reply_limit_per_hour: int = 10
    notify_limit_per_hour: int = Field(default=30, ge=1)
    notify_limit_per_ticket: int = Field(default=5, ge=1)
    new_tickets_per_sender_per_hour: int = Field(default=20, ge=1)
    comment_address: str = ""  # mail from staff to it is a hidden note (as RT's comment address)
    operator: str = ""  # the staff address `maildesk do` acts as (rules.yaml staff)
    sla_scan_seconds: float = Field(default=30.0, gt=0)  # SLA reminders, digest, pending
    reopen_days: float = Field(default=14.0, ge=0)
    notify_attach_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    trusted_authserv_id: str = ""  # comma-separated authserv-ids of MTAs whose verdicts count
    bounce_suppress_hours: float = 24.0
    outbox_max_attempts: int = 30
    outbox_backoff_seconds: float = 5.0
    outbox_backoff_max_seconds: float = 1800.0
    spam_ham_below: float = 0.6
    spam_spam_above: float = 0.95
    # sure: also learn each new live mail scored in a sure band as its verdict (README, Spam);
    # corrections: learn staff decisions only.
    spam_learn: Literal["sure", "corrections"] = "sure"
    spam_learn_seconds: float = Field(default=30.0, gt=0)  # at most this long between batches
    log_level: str = "INFO"
    hostname: str = Field(default="localhost")

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if value not in ("en", "ru"):
            raise ValueError("must be 'en' or 'ru'")
        return value

    @field_validator("smtp_listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> Settings:
        if not 0.0 <= self.spam_ham_below <= self.spam_spam_above <= 1.0:
            raise ValueError("need 0 <= MAILDESK_SPAM_HAM_BELOW <= MAILDESK_SPAM_SPAM_ABOVE <= 1")
        return self

    @property
    def support_addresses(self) -> tuple[str, ...]:
        return tuple(a.strip().lower() for a in self.support_address.split(",") if a.strip())

    @property
    def trusted_authserv_ids(self) -> frozenset[str]:
        ids = self.trusted_authserv_id.split(",")
        return frozenset(a.strip().lower() for a in ids if a.strip())

    @property
    def accepted_addresses(self) -> tuple[str, ...]:
        """What the SMTP listener takes mail for: the support addresses and the comment one."""
        comment = self.comment_address.strip().lower()
        return (*self.support_addresses, comment) if comment else self.support_addresses

    @property
    def primary_address(self) -> str:
        return self.support_addresses[0]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'maildesk.db').as_posix()}"

    @property
    def effective_outbound(self) -> str:
        return self.outbound or f"maildir:{(self.data_dir / 'sent').as_posix()}"

    def outbound_warning(self) -> str | None:
        """The dev default (a Maildir) with a real support address: production mail
        would quietly pile up in data/sent. One line for `run` and `check`."""
        if self.outbound:
            return None
        remote = [a for a in self.support_addresses if not _is_local(a.rpartition("@")[2])]
        if not remote:
            return None
        return (
            f"MAILDESK_OUTBOUND is unset: mail to customers of {remote[0]} is written to the "
            f"Maildir {self.data_dir / 'sent'} and not sent; set MAILDESK_OUTBOUND=smtp://..."
        )

    @property
    def spam_model_path(self) -> Path:
        return self.data_dir / "spam-model.npz"

    def hmac_key(self) -> bytes:
        """MAILDESK_SECRET, or a key generated once into data/secret."""
        if self.secret:
            return self.secret.encode()
        path = self.data_dir / "secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()


def _is_local(domain: str) -> bool:
    domain = domain.strip("[]").lower().rstrip(".")
    return domain in ("localhost", "localhost.localdomain", "127.0.0.1", "::1") or domain.endswith(
        ".localhost"
    )


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_settings(**overrides: Any) -> Settings:
    """Read settings once, at the edge; a bad value is a ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "MAILDESK_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{name or 'settings'}: {msg}")
        raise ConfigError(problems) from None
