"""Which way a metric is better, one rule for search, recommendations and benchmark comparisons."""

from __future__ import annotations

import re

#: Metrics where larger is better; any other is a loss, an error or a cost (smaller is better).
HIGHER = re.compile(r"acc|f1|auc|precision|recall|r2|score|iou|throughput|per_s|gbps", re.I)


def higher_is_better(name: str) -> bool:
    return bool(HIGHER.search(name))
