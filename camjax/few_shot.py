"""``python -m camjax.few_shot``: the WSOL standard's few-shot localization baseline (see camjax.tools.few_shot)."""

from camjax.tools.few_shot import entry

if __name__ == "__main__":
  entry()
