"""Imported once, by the forkserver that forks the parse workers (maildesk.work.parsepool):
the parsing code and the language model are loaded there, and every worker shares them
copy-on-write instead of loading a copy of its own (about 75 MiB each)."""

from maildesk import gcpolicy
from maildesk.work.parsepool import load_language_model

load_language_model()
gcpolicy.settle()  # frozen before the fork: the workers' collections skip the model
