"""`python -m maildesk` and the `maildesk` command.

For `run`, SIGTERM/SIGINT are latched before anything heavy is imported: a
signal that arrives during start-up stops the daemon cleanly once it can.
"""

import sys

from maildesk.lifecycle import SignalLatch


def main() -> None:
    latch = SignalLatch()
    if sys.argv[1:2] == ["run"]:
        latch.install()
    from maildesk.cli.main import main as cli_main

    cli_main(latch)


if __name__ == "__main__":
    main()
