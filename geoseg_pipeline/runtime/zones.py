"""The job's side of ``statistics.zones``: the zone layer read once, and each item's footprint
read from its header once, so that every raster item counts its zones and knows which ground the
items before it in the job already cover."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import GeosegError
from ..items import item_format
from ..sources import RasterSource, SourceOptions, open_source
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import Footprint, ItemZones, ZoneLayer, read_zones
from ..storage import S3Config


class ZoneBook:
    """Zones for the items of one job, in job order (``items``: every item of the job, those a
    ledger skips included, so that the footprints do not depend on what this run redoes)."""

    def __init__(self, spec: WorkflowSpec, items: Sequence[Item], s3: S3Config | None = None) -> None:
        zones = spec.statistics.zones
        assert zones is not None
        self.spec, self.s3 = spec, s3
        self.order = {item.name: i for i, item in enumerate(items)}
        self.items = list(items)
        self._layer: ZoneLayer | None = None
        self._footprints: dict[str, Footprint | None] = {}
        self._lock = threading.Lock()

    def layer(self) -> ZoneLayer:
        """The zone layer (read on first use).

        Raises:
            InputDataError: it cannot be read (naming the file and the reason).
        """
        with self._lock:
            if self._layer is None:
                z = self.spec.statistics.zones
                assert z is not None
                self._layer = read_zones(z.path, z.id_field, z.layer)
            return self._layer

    def for_item(self, item: Item) -> ItemZones:
        """The zones and the footprints of the items before ``item``."""
        earlier = self.items[: self.order.get(item.name, 0)]
        own = self._footprint(item)
        # only the scenes that can overlap this one: each item projects a few footprints, not
        # every earlier one of an archive
        prints = [f for f in (self._footprint(i) for i in earlier)
                  if f is not None and (own is None or own.may_overlap(f))]
        return ItemZones(self.layer(), tuple(prints))

    def _footprint(self, item: Item) -> Footprint | None:
        with self._lock:
            if item.name not in self._footprints:
                try:
                    src = open_source(item_format(item, self.spec), item.path,
                                      SourceOptions(s3=self.s3, stac=item.stac))
                except (GeosegError, OSError, ValueError):
                    self._footprints[item.name] = None  # the item fails on its own; it covers nothing
                else:
                    assert isinstance(src, RasterSource)
                    try:
                        self._footprints[item.name] = Footprint.of(src.grid) if src.grid.crs else None
                    finally:
                        src.close()
            return self._footprints[item.name]


__all__ = ["ZoneBook"]
