"""Statistics and job summaries as JSON and CSV."""

from .tables import ItemOutcome, write_item_stats, write_lesions, write_summary

__all__ = ["ItemOutcome", "write_item_stats", "write_lesions", "write_summary"]
