"""What a run shows: figures (CAM overlays, grids, top-5, class units) and the report page with metrics.

  figures.py  colormaps, overlays, boxes, grids, PNG writing, the HTML page
  page.py     metrics.json, the pictures of a run and report.html
"""

from camjax.report.page import METRICS_FILE, REPORT_FILE, format_table, write

__all__ = ["METRICS_FILE", "REPORT_FILE", "format_table", "write"]
