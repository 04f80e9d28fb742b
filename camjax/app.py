"""One way for every camjax command to turn a user error into one line.

Every command (``camjax.main``, ``camjax.evaluate``, ``camjax.cam_images``,
``camjax.features``, ``camjax.ablation``) runs its work through ``guard`` (or
``run_absl``, which also parses absl flags): a ``UserError`` or a flag that
cannot be parsed prints ``camjax: error: <what to change>`` on stderr and exits
2; any other exception is a bug and keeps its traceback. ``--verbose`` or
``CAMJAX_VERBOSE=1`` prints the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from camjax.errors import UserError

EXIT_USER_ERROR = 2
VERBOSE_ENV = "CAMJAX_VERBOSE"
PROG = "camjax"

# Exceptions that flag parsing raises for bad input: ml_collections raises a
# KeyError / AttributeError with a "did you mean" hint for a misspelt field and
# an OSError for a config file it cannot load.
_FLAG_INPUT_ERRORS = (KeyError, AttributeError, OSError, TypeError, ValueError)

_verbose = False


def set_verbose(value: bool) -> None:
  global _verbose
  _verbose = bool(value)


def verbose() -> bool:
  """True when user errors should show their traceback (``--verbose`` or ``CAMJAX_VERBOSE``)."""
  return _verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def one_line(message: object) -> str:
  """The message on one line: ml_collections quotes and wraps its hints in repr and newlines."""
  text = str(message)
  if "Traceback (most recent call last)" in text:
    # A config file's get_config raised: ml_collections wraps the whole traceback into its message.
    head = text.split("Traceback (most recent call last)", 1)[0].rstrip(" :\n")
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    text = f"{head}: {last}" if head else last
  if isinstance(message, KeyError) and message.args and isinstance(message.args[0], str):
    text = message.args[0]
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" and "\\n" in text:
    text = text[1:-1].replace("\\n", "\n").replace("\\'", "'")
  return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(message).__name__


def report(error: BaseException) -> int:
  """Print a user error as one line (with its traceback when verbose); returns the exit code."""
  if verbose():
    traceback.print_exception(error)
  print(f"{PROG}: error: {one_line(error)}", file=sys.stderr, flush=True)
  return EXIT_USER_ERROR


# jax probes every backend it knows (e.g. 'tpu') and logs each one that cannot start on this machine.
_BACKEND_LOGGER = "jax._src.xla_bridge"
_BACKEND_PROBE = "Unable to initialize backend"


class _BackendProbeFilter(logging.Filter):
  """Drops jax's INFO line about a backend it probed and could not start, e.g. 'tpu' on a CPU-only machine.

  Only the quiet probe is dropped (jax logs it below WARNING and goes on with the
  backends it found); a platform named in ``JAX_PLATFORMS`` that fails still raises.
  ``--verbose`` keeps the line.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING or verbose():
      return True
    return not record.getMessage().startswith(_BACKEND_PROBE)


def quiet_backend_probe() -> None:
  """Silence jax's 'Unable to initialize backend' probe messages (installed once, by every command)."""
  logger = logging.getLogger(_BACKEND_LOGGER)
  if not any(isinstance(f, _BackendProbeFilter) for f in logger.filters):
    logger.addFilter(_BackendProbeFilter())


def guard(work: Callable[[], int | None]) -> int:
  """Run a command's work; a user error becomes one line and exit 2, a bug keeps its traceback."""
  from absl import app as absl_app

  quiet_backend_probe()
  try:
    return int(work() or 0)
  except (UserError, absl_app.UsageError) as e:
    return report(e)


def parse_absl_flags(argv: Sequence[str]) -> list[str]:
  """``absl.app``'s flag parser, except that bad flags or config overrides end in one line and exit 2."""
  from absl import flags

  if "--verbose" in argv or "--verbose=true" in argv:
    set_verbose(True)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if "Error whilst parsing config file" in str(e):
      sys.exit(report(UserError(f"{one_line(e)}; fix --config")))
    sys.exit(report(UserError(f"{e}; run with --helpfull to list the flags")))
  except _FLAG_INPUT_ERRORS as e:
    sys.exit(report(UserError(config_flag_message(e, argv))))


def config_flag_message(error: BaseException, argv: Sequence[str] = ()) -> str:
  """One line for an error ml_collections raised while reading ``--config`` or a ``--config.x=y``.

  With the command line (``argv``), a misspelt field is named by its override
  and the hint gives its whole dotted path: ``no config field model.nmae (in
  --config.model.nmae=x); did you mean model.name?``.
  """
  text = one_line(error)
  cause = error.__cause__ or error.__context__
  if isinstance(error, OSError) and cause is not None and "earlier failure" in text:
    text = one_line(cause)
  if isinstance(error, (KeyError, AttributeError)):
    return _unknown_field_message(text, argv) or f"no config field {text}; fix the --config.* override"
  if isinstance(error, OSError) and "No such file or directory" in str(cause or error):
    path = str(cause or error).rsplit("No such file or directory:", 1)[-1].strip(" '\"\n")
    return f"config file {path} does not exist; fix --config"
  return f"{text}; fix --config"


def _unknown_field_message(text: str, argv: Sequence[str]) -> str | None:
  """``no config field a.b (in --config.a.b=v); did you mean a.c?`` from ml_collections' KeyError text."""
  missing = re.match(r"'([^']+)'", text)
  if missing is None:
    return None
  hint = re.search(r'[Dd]id you mean "([^"]+)"', text)
  for arg in argv:
    override = re.match(r"--?\w+\.([\w.]+)", arg)
    if override is None:
      continue
    parts = override.group(1).split(".")
    if missing.group(1) not in parts:
      continue
    at = parts.index(missing.group(1))
    message = f"no config field {'.'.join(parts[:at + 1])} (in {arg})"
    if hint:
      return f"{message}; did you mean {'.'.join(parts[:at] + [hint.group(1)])}?"
    return f"{message}; fix the override"
  return None


def config_value(name: str = "config"):
  """The parsed config flag; a config file that could not be loaded is a UserError."""
  from absl import flags

  try:
    value = getattr(flags.FLAGS, name)
    if value is not None:
      value.get("mode")  # a config file that failed to load is an object that raises on any access
    return value
  except _FLAG_INPUT_ERRORS as e:
    raise UserError(config_flag_message(e)) from e


def run_absl(main: Callable[[list[str]], int | None]) -> NoReturn:
  """``absl.app.run`` with one-line user errors, for flag parsing and for ``main`` itself."""
  from absl import app as absl_app

  quiet_backend_probe()
  absl_app.run(lambda argv: sys.exit(guard(lambda: main(argv))), flags_parser=parse_absl_flags)
  raise AssertionError("unreachable")  # absl_app.run always exits


def define_verbose_flag() -> None:
  """``--verbose`` for absl commands (defined once, whoever asks first)."""
  from absl import flags

  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, f"Show tracebacks of user errors too (or set {VERBOSE_ENV}=1).")


class ArgumentParser(argparse.ArgumentParser):
  """argparse with ``--verbose`` whose usage errors are UserErrors (one line, exit 2), not usage dumps."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument("--verbose", action="store_true",
                      help=f"show tracebacks of user errors too (or set {VERBOSE_ENV}=1)")

  def error(self, message: str) -> NoReturn:
    raise UserError(f"{message}; run with --help for usage")

  def parse_args(self, args=None, namespace=None):  # type: ignore[override]
    parsed = super().parse_args(args, namespace)
    set_verbose(parsed.verbose)
    return parsed


def writable_dir(path: str, flag: str) -> str:
  """Create ``path`` if needed; a file in its place or a directory without write access is a UserError."""
  path = os.path.expanduser(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{flag}={path} is a file, not a directory; choose another {flag}")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {flag}={path} ({e.strerror}); choose another {flag}") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"{flag}={path} is not writable; fix its permissions or choose another {flag}")
  return path


def writable_file(path: str, flag: str) -> str:
  """Check, before any work, that ``path`` can be written (its directory exists and is writable)."""
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    raise UserError(f"{flag}={path} is a directory; give a file name")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise UserError(f"{flag}={path}: directory {parent} does not exist; create it or choose another {flag}")
  if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise UserError(f"{flag}={path} cannot be written; fix the permissions or choose another {flag}")
  return path


def write_together(directory: str, writers: dict[str, Callable[[str], None]]) -> list[str]:
  """Write several files of ``directory`` so that a failure leaves the earlier versions of all of them.

  ``writers`` maps a file name to a function that writes that file's content to the
  path it is given (a temporary file beside it); only when every one has succeeded
  are they renamed into place. Returns the written paths in ``writers``' order.
  """
  import tempfile

  temps: dict[str, str] = {}
  try:
    for name, write in writers.items():
      fd, temps[name] = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
      os.close(fd)
      write(temps[name])
    paths = []
    for name, tmp in temps.items():
      os.chmod(tmp, 0o644)
      os.replace(tmp, os.path.join(directory, name))
      paths.append(os.path.join(directory, name))
    return paths
  finally:
    for tmp in temps.values():
      if os.path.exists(tmp):
        os.remove(tmp)


def text_writer(text: str) -> Callable[[str], None]:
  """A ``write_together`` writer of ``text`` (UTF-8)."""
  def write(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  return write


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "",
                 footer: str = "") -> str:
  """Rows as an aligned plain-text table for the console: first column left, the others right.

  Floats print with two decimals; every command's console table goes through here.
  """
  def cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)

  table = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in table) for i in range(len(header))]
  lines = [title] if title else []
  for r in table:
    lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
  if footer:
    lines.append(footer)
  return "\n".join(lines)
