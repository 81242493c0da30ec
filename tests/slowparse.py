"""A parse function for tests: a mail containing SLOW-TO-PARSE takes 3 s, one with
STUCK-IN-PARSING 30 s, one with BRIEFLY-SLOW half a second, like the pathological
mails the issue describes.
Module-level so worker processes can import it."""

import os
import time
from dataclasses import replace

from maildesk.core.parse import InboundMail, parse_mail


def parse_slowly(raw: bytes) -> InboundMail:
    if b"STUCK-IN-PARSING" in raw:  # until the time limit stops it
        time.sleep(30)
    elif b"SLOW-TO-PARSE" in raw:
        time.sleep(3)
    elif b"BRIEFLY-SLOW" in raw:
        time.sleep(0.5)
    return parse_mail(raw)


def parse_telling_niceness(raw: bytes) -> InboundMail:
    """The mail, its subject replaced by the worker process's nice value."""
    return replace(parse_mail(raw), subject=str(os.nice(0)))
