"""Statistics, job summaries and the cohort report as JSON, CSV and HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .cohort import CohortClass, CohortTable, cohort_table, is_volume_job
    from .outcome import ItemOutcome
    from .tables import write_cohort, write_item_stats, write_lesions, write_summary, write_zones

_EXPORTS = {
    "CohortClass": ".cohort",
    "CohortTable": ".cohort",
    "cohort_table": ".cohort",
    "is_volume_job": ".cohort",
    "ItemOutcome": ".outcome",
    "write_cohort": ".tables",
    "write_item_stats": ".tables",
    "write_lesions": ".tables",
    "write_summary": ".tables",
    "write_zones": ".tables",
}
__getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "CohortClass",
    "CohortTable",
    "ItemOutcome",
    "cohort_table",
    "is_volume_job",
    "write_cohort",
    "write_item_stats",
    "write_lesions",
    "write_summary",
    "write_zones",
]
