"""``python -m camjax.evaluate``: score saved maps against WSOL-standard metadata (see camjax.tools.evaluate)."""

import sys

from camjax.tools.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
