"""The one error type every command reports as a single line.

A ``UserError`` is input the user can fix (a config value, a path, a file): its
message says what is wrong and what to change, on one line. The commands print
it as ``camjax: error: <message>`` and exit 2 (see ``camjax.app``). Anything
else is a bug and keeps its traceback. ``UserError`` is a ``ValueError`` so
library callers that catch ``ValueError`` keep working.

This module imports nothing, so every layer (the JAX-free evaluator included)
can raise it.
"""

from __future__ import annotations


class UserError(ValueError):
  """Bad input a user can fix; the message is one line saying what to change."""


class ConfigError(UserError):
  """A config value that cannot work; the message names the ``--config.*`` field to change."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user must provide is not there; still a FileNotFoundError for library callers."""
