"""``python -m camjax.cam_images``: CAMs, boxes and figures for your own images (see camjax.tools.cam_images)."""

from camjax.tools.cam_images import main

if __name__ == "__main__":
  main()
