"""A parse function for tests: a mail containing SLOW-TO-PARSE takes 3 s, like the
pathological mails the issue describes. Module-level so worker processes can import it."""

import time

from maildesk.parse import InboundMail, parse_mail


def parse_slowly(raw: bytes) -> InboundMail:
    if b"SLOW-TO-PARSE" in raw:
        time.sleep(3)
    return parse_mail(raw)
