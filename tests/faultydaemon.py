"""`python -m tests.faultydaemon run`: `maildesk run` whose IMAP pollers SIGKILL the
daemon after the first ticket commit, before the mail is moved (a crash at the worst
moment). The faults are wired in through the composition root's `poller_hooks`."""

from __future__ import annotations

from functools import partial

from maildesk import app
from tests.faults import Faults

if __name__ == "__main__":
    app.run_daemon = partial(app.run_daemon, poller_hooks=Faults(kill_before_move=True))
    from maildesk.__main__ import main

    main()
