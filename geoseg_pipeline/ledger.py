"""The run ledger: one SQLite file in the output directory, one row per item.

A row says what produced the item's outputs: the input's **fingerprint** (size and modification
time of a file; of every file of a directory store such as Zarr), the **model hash** (SHA-256
of the model's files, or of a built-in model's bundled weights) and the **config hash** (SHA-256
of the workflow settings that change outputs: input format, channel axis and nodata, model,
preprocessing, tiling, output formats, statistics, classes, inference; not the paths of inputs,
outputs, staging folders and model files, nor the resources: see :func:`config_hash`). A
re-run skips an item whose row is ``ok`` with the same three values and whose outputs are all
still there; anything else is processed again. Each run also gets a row in ``runs``.

The ledger is written by the driver only, in autocommit mode with SQLite's write-ahead log, so a
killed run leaves every finished item recorded and its own unfinished items as ``running``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import LedgerError
from .formats import SERIES_MARK
from .spec import WorkflowSpec
from .statistics import ItemStats

if TYPE_CHECKING:
    from .storage import S3Config

log = logging.getLogger("geoseg")

#: The ledger's file name inside the output directory.
LEDGER_NAME = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT NOT NULL,
    started REAL,
    finished REAL,
    seconds REAL,
    windows INTEGER,
    error TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '[]',
    stats TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    items_ok INTEGER,
    items_skipped INTEGER,
    items_failed INTEGER,
    status TEXT NOT NULL
);
"""


class OutputLock:
    """One run at a time writes to an output directory: an advisory ``flock`` on
    ``OUT/.geoseg.lock``, held until :meth:`close` (the operating system releases it when the
    process dies). Taken before the ledger is opened, or fetched from an object store.

    Raises:
        LedgerError: another live run holds the directory.
    """

    def __init__(self, out_dir: Path) -> None:
        import fcntl

        f = open(out_dir / ".geoseg.lock", "a+", encoding="ascii")  # noqa: SIM115 -- held while the run lasts
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise LedgerError(f"{out_dir}: another geoseg run (pid {holder}) is writing to this output "
                              "directory; wait for it to finish or use another directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file: TextIO | None = f

    def close(self) -> None:
        """Give the directory up."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ItemKey:
    """What an item's outputs depend on."""

    fingerprint: str
    model_hash: str
    config_hash: str


@dataclass(frozen=True)
class LedgerRow:
    """One item's record."""

    item: str
    source: str
    key: ItemKey
    status: str  # running | ok | failed | interrupted
    run_id: str
    started: float | None
    finished: float | None
    seconds: float | None
    windows: int | None
    error: str
    outputs: tuple[str, ...]
    stats: dict[str, Any] | None
    stats_error: str = ""
    """Why the stored statistics cannot be read as :class:`~geoseg_pipeline.statistics.ItemStats`
    (damaged, or not statistics at all); then ``stats`` is ``None``. Empty when they can."""


class Ledger:
    """The ledger of one output directory (created on first use)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LEDGER_NAME
        self._guard = threading.Lock()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"{self.path}: cannot open the run ledger: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def mark_interrupted(self) -> None:
        """Mark the runs and items an earlier run left ``running`` as ``interrupted``: under
        :class:`OutputLock`, no live run is writing, so their driver was killed (their items are
        processed again, resuming from committed blocks)."""
        self._exec("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        self._exec("UPDATE items SET status = 'interrupted', error = ? WHERE status = 'running'",
                   ("the run processing it was killed before it finished",))

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            with self._guard:  # the driver and its commit thread both write
                return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, workflow: str) -> str:
        """Record a new run; returns its id."""
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._exec("INSERT INTO runs (run_id, workflow, started, status) VALUES (?, ?, ?, 'running')",
                   (run_id, workflow, time.time()))
        return run_id

    def finish_run(self, run_id: str, ok: int, skipped: int, failed: int, status: str | None = None) -> None:
        """Record the end of a run and its counts (``status`` default: ``failed`` if an item
        failed, else ``ok``)."""
        status = status or ("failed" if failed else "ok")
        self._exec("UPDATE runs SET finished = ?, items_ok = ?, items_skipped = ?, items_failed = ?, status = ? "
                   "WHERE run_id = ?", (time.time(), ok, skipped, failed, status, run_id))

    # -- items --------------------------------------------------------------------------------

    def get(self, item: str) -> LedgerRow | None:
        """The row of ``item``, if any."""
        row = self._exec("SELECT item, source, fingerprint, model_hash, config_hash, status, run_id, started, "
                         "finished, seconds, windows, error, outputs, stats FROM items WHERE item = ?",
                         (item,)).fetchone()
        return None if row is None else _row(row)

    def rows(self) -> list[LedgerRow]:
        """Every item's row, by item name."""
        cur = self._exec("SELECT item, source, fingerprint, model_hash, config_hash, status, run_id, started, "
                         "finished, seconds, windows, error, outputs, stats FROM items ORDER BY item")
        return [_row(r) for r in cur.fetchall()]

    def finished(self, item: str, key: ItemKey, exists: Callable[[str], bool] = os.path.exists) -> LedgerRow | None:
        """The row of ``item`` when it finished with ``key``, its outputs still ``exist`` (local
        paths by default; ``s3://`` URIs with an object-store check) and its statistics can be
        read (a row whose statistics cannot is logged and processed again)."""
        row = self.get(item)
        if row is None or row.status != "ok" or row.key != key:
            return None
        if not row.outputs or not all(exists(p) for p in row.outputs):
            return None
        if row.stats_error:
            log.warning("%s: the statistics recorded by run %s cannot be read (%s): processed again",
                        item, row.run_id, row.stats_error)
            return None
        return row

    def started(self, item: str, source: str, key: ItemKey, run_id: str) -> None:
        """Record that ``item`` is being processed by ``run_id``."""
        self._exec(
            "INSERT INTO items (item, source, fingerprint, model_hash, config_hash, status, run_id, started) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?) ON CONFLICT(item) DO UPDATE SET source = excluded.source, "
            "fingerprint = excluded.fingerprint, model_hash = excluded.model_hash, config_hash = "
            "excluded.config_hash, status = 'running', run_id = excluded.run_id, started = excluded.started, "
            "finished = NULL, seconds = NULL, windows = NULL, error = '', outputs = '[]', stats = NULL",
            (item, source, key.fingerprint, key.model_hash, key.config_hash, run_id, time.time()),
        )

    def succeeded(self, item: str, outputs: tuple[str, ...], seconds: float, windows: int,
                  stats: dict[str, Any] | None) -> None:
        """Record that ``item`` finished and where its outputs are."""
        self._exec("UPDATE items SET status = 'ok', finished = ?, seconds = ?, windows = ?, outputs = ?, stats = ? "
                   "WHERE item = ?", (time.time(), seconds, windows, json.dumps(list(outputs)),
                                      None if stats is None else json.dumps(stats), item))

    def failed(self, item: str, source: str, key: ItemKey | None, run_id: str, error: str) -> None:
        """Record that ``item`` failed and why (also for items that never started)."""
        key = key or ItemKey("", "", "")
        self._exec(
            "INSERT INTO items (item, source, fingerprint, model_hash, config_hash, status, run_id, finished, error) "
            "VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?) ON CONFLICT(item) DO UPDATE SET source = excluded.source, "
            "status = 'failed', run_id = excluded.run_id, finished = excluded.finished, error = excluded.error, "
            "outputs = '[]', stats = NULL",
            (item, source, key.fingerprint, key.model_hash, key.config_hash, run_id, time.time(), error),
        )


def _row(r: tuple[Any, ...]) -> LedgerRow:
    stats, stats_error = _stats(r[13])
    return LedgerRow(
        item=r[0], source=r[1], key=ItemKey(r[2], r[3], r[4]), status=r[5], run_id=r[6], started=r[7],
        finished=r[8], seconds=r[9], windows=r[10], error=r[11], outputs=tuple(json.loads(r[12] or "[]")),
        stats=stats, stats_error=stats_error,
    )


def _stats(text: str | None) -> tuple[dict[str, Any] | None, str]:
    """The stored statistics and, when they cannot be read as :class:`ItemStats`, why not.
    Records of other versions can (unknown fields are ignored, missing optional ones default)."""
    if not text:
        return None, ""
    try:
        doc = json.loads(text)
        ItemStats.from_dict(doc)
    except ValueError as exc:  # json.JSONDecodeError is one
        return None, str(exc)
    return doc, ""


# -- what outputs depend on -------------------------------------------------------------------


def fingerprint(path: str, s3: S3Config | None = None, dicomweb: Any = None) -> str:
    """Size and modification time of a file; for a directory (a Zarr store), a digest of every
    file's relative path, size and modification time; for an ``s3://`` object, its size and
    ETag from a HEAD request (for an ``s3://`` Zarr store, a digest of every object's key, size
    and ETag), with ``s3`` (required for ``s3://`` paths).

    Raises:
        OSError: the path cannot be read (:class:`~geoseg_pipeline.errors.SourceError` for an
            object store: unreachable, missing, access denied).
    """
    from .storage import is_s3, object_fingerprint, require_s3

    if is_s3(path):
        return object_fingerprint(path, require_s3(path, s3))
    if SERIES_MARK in path:  # a DICOM series: its files
        from .sources.dicom_series import series_fingerprint

        return series_fingerprint(path, dicomweb)
    st = os.stat(path)
    if not os.path.isdir(path):
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha256()
    count = 0
    for rel, size, mtime in sorted(_walk(path)):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
        count += 1
    return f"dir:{count}:{digest.hexdigest()[:32]}"


def stac_fingerprint(ref: Any, s3: S3Config | None = None) -> str:
    """A STAC item's fingerprint: its JSON's digest and every asset it reads (each asset's
    :func:`fingerprint`: size and modification time, or size and ETag; an ``http(s)://`` asset
    by its href alone), so that a changed band, mask or item document makes it a new input.

    Raises:
        OSError: an asset cannot be read.
    """
    from .storage import uri_scheme

    digest = hashlib.sha256(ref.digest.encode())
    for href in dict.fromkeys(b.href for b in ref.assets):
        remote = uri_scheme(href) not in (None, "file", "s3")
        digest.update(f"{href}\0{'' if remote else fingerprint(href, s3)}\n".encode())
    return f"stac:{len(ref.assets)}:{digest.hexdigest()[:32]}"


def _walk(root: str) -> Iterator[tuple[str, int, int]]:
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            yield os.path.relpath(full, root), st.st_size, st.st_mtime_ns


def _hash_path(digest: Any, path: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)


def model_hash(spec: WorkflowSpec) -> str:
    """SHA-256 of the model's content: every file or folder the model section names, or a
    built-in model's bundled weights.

    Raises:
        OSError: a named file cannot be read.
    """
    digest = hashlib.sha256()
    model = spec.model
    if model.type == "builtin":
        from . import models

        weights = Path(models.__file__).with_name(f"{(model.name or '').replace('-', '_')}.pt")
        digest.update(f"builtin:{model.name}\0".encode())
        if weights.is_file():
            _hash_path(digest, weights)
    for name, value in sorted(model):
        if isinstance(value, Path) and value.exists():
            digest.update(f"{name}\0".encode())
            _hash_path(digest, value)
    return digest.hexdigest()


def config_hash(spec: WorkflowSpec) -> str:
    """SHA-256 of the workflow settings that change outputs.

    Hashed: the input settings (``format``, ``channel_axis``, ``nodata``), the model section,
    preprocessing, tiling, output formats and encoding, statistics, classes and inference. Not
    hashed: where items come from (``inputs.paths``, ``inputs.manifest``), where outputs go
    (``output.directory``, ``remote``, and ``staging``, a folder of the machine that runs), the
    paths of the model's files (their content is in :func:`model_hash`), the resources, and
    ``tiling.batch_size`` (how many windows share a forward pass: each window's logits are the
    same, and the default depends on the worker's device).
    """
    doc = spec.model_dump(mode="json", include={"preprocessing", "tiling", "statistics", "classes", "inference"})
    doc["tiling"].pop("batch_size", None)
    doc["inputs"] = spec.inputs.model_dump(mode="json", exclude={"paths", "manifest", "dicomweb"})
    if doc["inputs"].get("stac") is not None:  # which catalog lists the items is where they come from
        del doc["inputs"]["stac"]["catalog"]
    doc["model"] = spec.model.model_dump(mode="json", exclude={n for n, v in spec.model if isinstance(v, Path)})
    # where a SEG is stored, like where outputs go, is not hashed; settings added later enter the
    # hash only when set, so that a workflow that does not use them keeps its hash
    doc["output"] = spec.output.model_dump(mode="json", exclude={"directory", "remote", "staging", "dicomweb"})
    if doc["output"].get("identifiers") is True:
        del doc["output"]["identifiers"]
    for section, key in (("model", "text_classes"), ("model", "architecture"), ("inputs", "stac"), ("inputs", "mask"),
                         ("inputs", "variables"), ("output", "stac")):
        if doc[section].get(key, 0) is None:
            del doc[section][key]
    if doc.get("classes"):
        doc["classes"] = [{k: v for k, v in c.items() if not (k in ("dicom", "prompt", "threshold") and v is None)}
                          for c in doc["classes"]]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


__all__ = ["LEDGER_NAME", "ItemKey", "Ledger", "LedgerRow", "config_hash", "fingerprint",
           "model_hash"]
