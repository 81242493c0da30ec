"""The exceptions maildesk raises, named for how a caller must respond."""

from __future__ import annotations


class MaildeskError(Exception):
    """Base of every error maildesk raises on purpose."""


class ConfigError(MaildeskError):
    """Settings, rules, SLA or templates are invalid. Each entry is one 'file:line: why' line."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class Rejected(MaildeskError):
    """An SMTP reply to give the client instead of accepting the mail."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{code} {text}")

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class MalformedMail(MaildeskError):
    """The mail cannot be processed (too big, too deep, too slow to parse).

    The raw bytes are kept as an error record; a human decides.
    """


class TransientError(MaildeskError):
    """Try again later (relay down, 4xx, database busy)."""


class PermanentError(MaildeskError):
    """Retrying will not help (5xx from the relay); dead-letter and show it."""


class NotFound(MaildeskError):
    """A ticket or record the user named does not exist."""


class SchemaBehind(MaildeskError):
    """The database schema is older than the code; run `maildesk db upgrade`."""
