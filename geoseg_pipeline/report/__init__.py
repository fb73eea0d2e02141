"""Statistics, job summaries and the cohort report as JSON, CSV and HTML."""

from .cohort import CohortClass, CohortTable, cohort_table, is_volume_job
from .outcome import ItemOutcome
from .tables import write_cohort, write_item_stats, write_lesions, write_summary, write_zones

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
