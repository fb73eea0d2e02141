"""The run ledger's side of a job: which items to skip, and each item's record as it goes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..ledger import ItemKey, Ledger, LedgerRow, config_hash, fingerprint, model_hash, stac_fingerprint
from ..report import ItemOutcome
from ..sinks.publish import Publisher
from ..sources.dicomweb import from_spec
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ItemStats
from ..storage import S3Config, is_s3

log = logging.getLogger("geoseg")


class Book:
    """The run ledger's side of a job: what to skip, and each item's record as it goes."""

    def __init__(self, ledger: Ledger, run_id: str, spec: WorkflowSpec, s3: S3Config | None = None,
                 publisher: Publisher | None = None, force: bool = False) -> None:
        self.ledger, self.run_id, self.s3, self.publisher = ledger, run_id, s3, publisher
        self.force = force
        self.model_hash = model_hash(spec)
        self.config_hash = config_hash(spec)
        self.keys: dict[str, ItemKey] = {}
        self.dicomweb = from_spec(spec.inputs.dicomweb)
        self.out_dir = spec.output.directory
        #: the last successful record of each item processed again (its outputs, and the input
        #: they were made from), until the item ends
        self.previous: dict[str, LedgerRow] = {}

    def key(self, item: Item) -> ItemKey:
        """The item's input fingerprint with this run's model and config hashes."""
        key = self.keys.get(item.name)
        if key is None:
            try:
                fp = stac_fingerprint(item.stac, self.s3) if item.stac is not None else \
                    fingerprint(item.path, self.s3, self.dicomweb)
            except OSError:
                fp = "unreadable"
            key = self.keys[item.name] = ItemKey(fp, self.model_hash, self.config_hash)
        return key

    def triage(self, items: list[Item]) -> tuple[list[Item], list[ItemOutcome]]:
        """Split ``items`` into those to process and those finished before (as outcomes);
        with ``force``, none is finished."""
        todo: list[Item] = []
        skipped: list[ItemOutcome] = []
        exists = self.publisher.exists if self.publisher is not None else os.path.exists
        for item in items:
            row = None if self.force else self.ledger.finished(item.name, self.key(item), exists)
            if row is None:
                todo.append(item)
                earlier = self.ledger.get(item.name)
                if earlier is not None and earlier.status == "ok" and earlier.outputs:
                    self.previous[item.name] = earlier
                continue
            stats = ItemStats.from_dict(row.stats) if row.stats else None
            skipped.append(ItemOutcome(item.name, item.path, "skipped", stats=stats, outputs=row.outputs,
                                       seconds=row.seconds or 0.0, windows=row.windows or 0,
                                       extra={"finished_by_run": row.run_id}))
        if skipped:
            log.info("%d item(s) already done with the same input, model and configuration: skipped "
                     "(--force reprocesses them)", len(skipped))
        return todo, skipped

    def started(self, item: Item) -> None:
        self.ledger.started(item.name, item.path, self.key(item), self.run_id)

    def ok(self, outcome: ItemOutcome) -> None:
        self.previous.pop(outcome.item, None)
        self.ledger.succeeded(outcome.item, outcome.outputs, outcome.seconds, outcome.windows,
                              outcome.stats.to_dict() if outcome.stats else None)

    def failed(self, item: Item, reason: str) -> str:
        """Record ``item``'s failure; returns the reason, extended when the outputs of an earlier
        run were removed: made from an earlier version of the input (another fingerprint), they
        would otherwise stand in ``OUT/<item>/`` looking like this input's result. Outputs of the
        same input (a forced run, another model) are kept."""
        earlier = self.previous.pop(item.name, None)
        if earlier is not None and earlier.key.fingerprint != self.key(item).fingerprint:
            removed = self._remove_outputs(item, earlier.outputs)
            if removed:
                reason += (f" (the {removed} output file(s) of run {earlier.run_id}, made from an earlier version of "
                           "this input, were removed)")
        self.ledger.failed(item.name, item.path, self.key(item), self.run_id, reason)
        folder = self.out_dir / item.name
        if not item.error and folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()  # nothing in it: no folder that looks like an item's outputs
        return reason

    def _remove_outputs(self, item: Item, outputs: tuple[str, ...]) -> int:
        """Remove the local files ``outputs`` lists in ``OUT/<item>/`` and their sidecars (the
        files beside them named after them: ``labels.tif.aux.xml``, ``labels.txt``); how many.
        Outputs in an object store are left (and said in the log)."""
        folder = (self.out_dir / item.name).resolve()
        stems = set()
        removed = 0
        for out in outputs:
            path = Path(out)
            if is_s3(out) or not path.resolve().is_relative_to(folder):
                log.warning("%s: %s is from an earlier version of the input and was not removed", item.name, out)
                continue
            stems.add(_stem(path.name))
        if not folder.is_dir():
            return 0
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith(".") and _stem(path.name) in stems:
                path.unlink()
                removed += 1
        if removed:
            log.warning("%s: removed %d output file(s) of an earlier run, made from an earlier version of the input",
                        item.name, removed)
        return removed


def _stem(name: str) -> str:
    """What an output and its sidecars share: ``labels`` of ``labels.tif``, ``labels.tif.aux.xml``
    and ``labels_ColorTable.ctbl``."""
    return name.split(".")[0].split("_")[0]


__all__ = ["Book"]
