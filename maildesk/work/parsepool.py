"""Parse mails in worker processes with a time limit, so one pathological mail
cannot stall the daemon: a parse that overruns is killed and reported. The
workers also work out what else is pure about a mail (its language, its body
hash), which leaves the pipeline process that much less to do."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from pebble import ProcessExpired, ProcessPool

from maildesk.core.language import guess_language
from maildesk.core.parse import InboundMail, parse_mail
from maildesk.errors import MalformedMail

# How far below the rest of the daemon the parse workers run (nice): under a burst the
# SMTP intake (the 250 a client waits for) and the pipeline come first, and the parsers
# take what they leave, which is all the pipeline needs of them.
PARSER_NICENESS = 5


def read_mail(raw: bytes) -> InboundMail:
    """parse_mail, with the mail's cached facts filled in to travel back with it."""
    mail = parse_mail(raw)
    _ = mail.written_in, mail.body_hash
    return mail


def start_worker() -> None:
    """In each parse worker as it starts: a lower priority, and the model."""
    os.nice(PARSER_NICENESS)
    load_language_model()


def load_language_model() -> None:
    """Loaded before the first mail: in the forkserver (maildesk.work.parsepreload), so
    the workers share it, and again in each worker as it starts in case the forkserver
    was started before (then each has its own copy)."""
    guess_language("load the language model before the first mail")


@dataclass(frozen=True)
class ParseFailure:
    error: str


class ParserPool:
    """pebble's ProcessPool: per-task timeouts that kill and replace the worker."""

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 10.0,
        parse: Callable[[bytes], InboundMail] = read_mail,  # a module-level function
    ) -> None:
        self.timeout = timeout
        self._parse = parse
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["maildesk.work.parsepreload"])
        self._pool = ProcessPool(
            max_workers=workers, initializer=start_worker, context=context
        )

    async def parse(self, raw: bytes) -> InboundMail | ParseFailure:
        future = self._pool.schedule(self._parse, args=(raw,), timeout=self.timeout)
        try:
            return await asyncio.wrap_future(future)
        except MalformedMail as exc:
            return ParseFailure(f"mail exceeds processing bounds: {exc}")
        except (FutureTimeout, TimeoutError):
            return ParseFailure(f"parsing took longer than {self.timeout:g} s; stopped")
        except ProcessExpired as exc:
            return ParseFailure(f"parser process died: {exc}")
        except Exception as exc:  # a bug in parsing: keep the raw mail, tell the operator
            return ParseFailure(f"parser error: {type(exc).__name__}: {exc}")

    def close(self, wait: bool = True) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]  # pebble has no hints here
        if wait:
            self._pool.join(timeout=5)
