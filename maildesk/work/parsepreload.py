"""Imported once, by the forkserver that forks the parse workers (maildesk.work.parsepool):
the parsing code and the language model are loaded there, and every worker shares them
copy-on-write instead of loading a copy of its own (about 75 MiB each).

The forkserver, and so every worker, also runs at a lower CPU priority (nice 5): under a
burst the SMTP intake (the 250 a client waits for) and the pipeline come first, and the
parsers take what they leave, which is all the pipeline needs of them (measured: intake
+6%, end to end +6% on two cores)."""

import os

from maildesk import gcpolicy
from maildesk.work.parsepool import PARSER_NICENESS, load_language_model

os.nice(PARSER_NICENESS)
load_language_model()
gcpolicy.settle()  # frozen before the fork: the workers' collections skip the model
