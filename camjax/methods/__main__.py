"""Commands of the CAM family: ``compare`` scores every method, ``demo`` serves a page to try them.

  python -m camjax.methods compare --config=configs/quickstart.py --workdir=runs/quickstart
  python -m camjax.methods demo [--workdir=runs/quickstart] [--port=7860]

The commands live in ``camjax.tools`` (``compare_methods``, ``demo``); this
module only picks one, so ``camjax.methods`` itself stays a library.
"""

from __future__ import annotations

import importlib
import sys

from camjax import app
from camjax.errors import UserError

COMMANDS = {"compare": "camjax.tools.compare_methods", "demo": "camjax.tools.demo"}


def entry(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  command = argv[1] if len(argv) > 1 else ""
  if command not in COMMANDS:
    return app.report(UserError(
        f"name a command: python -m camjax.methods {{{'|'.join(COMMANDS)}}} [flags], got {command or 'none'!r}"))
  module = importlib.import_module(COMMANDS[command])
  return int(module.main([f"{argv[0]} {command}"] + argv[2:]) or 0)


if __name__ == "__main__":
  sys.exit(entry())
