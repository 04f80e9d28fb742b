"""``python -m camjax.ablation``: one config field over several seeds, one table (see camjax.tools.ablation)."""

from camjax.tools.ablation import entry

if __name__ == "__main__":
  entry()
