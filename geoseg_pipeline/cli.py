"""``geoseg``: a thin command line over :mod:`geoseg_pipeline.api`. The only module that parses
arguments; ``main(argv)`` is testable and returns the exit status."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import GeosegError, SpecError
from .formats import FORMAT_NAMES

if TYPE_CHECKING:
    from .evaluation import EvaluationResult
    from .ledger import LedgerRow
    from .runtime import JobResult

log = logging.getLogger("geoseg")


def _roi(text: str) -> list[int]:
    """``96`` / ``256,256`` / ``96x96x64``: every part a number (``32,,16`` and ``32,32,x`` are
    typos, not two-number sizes)."""
    parts = text.strip().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3:
        raise argparse.ArgumentTypeError(f"roi size must be N, N,N (a raster) or N,N,N (a volume), got {text!r}")
    return values


def _spacing(text: str) -> list[float]:
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"spacing must be three voxel sizes in mm (e.g. 1.5,1.5,2), got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoseg", description="Batch segmentation of rasters on Ray.")
    p.add_argument("--version", action="version", version=f"geoseg {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a workflow file")
    run.add_argument("workflow", type=Path)
    run.add_argument("--address", help="Ray cluster address (auto or HOST:PORT); default: a local Ray")
    run.add_argument("--force", action="store_true",
                     help="reprocess every item, also those the ledger records as done")

    val = sub.add_parser("validate", help="check a workflow file and list every problem")
    val.add_argument("workflow", type=Path)

    pred = sub.add_parser("predict", help="segment files without a workflow file")
    pred.add_argument("inputs", nargs="+")
    pred.add_argument("--model", required=True,
                      help="TorchScript file, .onnx file, MONAI bundle folder, nnU-Net trained model folder, "
                      "Hugging Face folder (save_pretrained), TorchGeo task .ckpt, "
                      "model.yaml (a workflow model section), or a built-in name (landcover-demo, ct-demo); "
                      "see docs/models.md")
    pred.add_argument("--folds", metavar="K[,K]", default=None,
                      help="nnU-Net models: the folds to ensemble (default: every fold in the folder), e.g. 0,1 or all")
    pred.add_argument("--no-mirroring", action="store_true",
                      help="nnU-Net models: no test-time mirroring (as nnUNetv2_predict --disable_tta)")
    pred.add_argument("--out", required=True, help="the output folder, or s3://bucket/prefix")
    pred.add_argument("--roi-size", type=_roi, default=None, metavar="N[,N[,N]]",
                      help="window size (default 256, or a bundle's); three numbers (e.g. 96,96,96) for volumes")
    pred.add_argument("--overlap", type=float, default=None, help="default 0.25 (or a bundle's)")
    pred.add_argument("--blend", choices=["gaussian", "constant"], default=None, help="default gaussian")
    pred.add_argument("--batch-size", type=int, default=None,
                      help="windows per forward pass (default: 8 on a CPU, what fits in a GPU's free memory)")
    pred.add_argument("--workers", type=int, default=None)
    pred.add_argument("--classes", help="comma-separated class names, in label order; for a text-prompted model "
                      "(CLIPSeg) the prompts: NAME (the name is the prompt) or NAME=PROMPT")
    pred.add_argument("--background-threshold", type=float, default=None, metavar="T",
                      help="text-prompted models: a first class, background, where every prompt's probability "
                      "is below T (0 < T < 1)")
    pred.add_argument("--logits", action="store_true", help="rasters: also write the blended logits (logits.tif)")
    pred.add_argument("--vector", action="append", choices=["geoparquet", "gpkg"], default=[],
                      help="rasters: also write one polygon per connected region (labels.parquet or labels.gpkg; "
                           "may be given twice)")
    pred.add_argument("--zarr", action="store_true", help="volumes: also write labels.zarr (OME-Zarr)")
    pred.add_argument("--dicom-seg", action="store_true",
                      help="DICOM series: also write labels.dcm, a DICOM Segmentation over the series")
    pred.add_argument("--lesion-classes", default="", metavar="K[,K]",
                      help="volumes: classes whose connected components are counted and measured")
    pred.add_argument("--orientation", metavar="AXCODES",
                      help="volumes: the model's axis codes (e.g. RAS); windows are reoriented")
    pred.add_argument("--spacing", type=_spacing, metavar="X,Y,Z",
                      help="volumes: the model's voxel size in mm (model axis order); windows are resampled")
    pred.add_argument("--block-size", type=int, default=None, help="output block edge in voxels/pixels")
    pred.add_argument("--format", dest="input_format", choices=["auto", *FORMAT_NAMES], default="auto",
                      help="the inputs' format (inputs.format); dicom: folders of DICOM series, one item per series")
    pred.add_argument("--assets", metavar="KEY[,KEY]",
                      help="the inputs are STAC documents (items, item collections, catalogs, STAC-GeoParquet): "
                           "these assets are the model's bands, in order (KEY:BAND for a band of a multi-band asset)")
    pred.add_argument("--variables", metavar="NAME[,NAME]",
                      help="--format xarray-zarr: the cube's variables (or VARIABLE:LABEL bands) that are the "
                           "model's bands, in order (inputs.variables)")
    pred.add_argument("--mask", metavar="ASSET:V[,V]|ASSET:bits=B[,B]",
                      help="STAC inputs: a quality asset and its invalid values (SCL:0,1,3,8,9,10) or bit flags "
                           "(QA_PIXEL:bits=1,3,4); those pixels are nodata")
    pred.add_argument("--address")
    pred.add_argument("--force", action="store_true", help="reprocess items the ledger records as done")

    ev = sub.add_parser("evaluate", help="Dice, IoU, HD95 and volume/area difference against reference labels")
    ev.add_argument("pred_dir", type=Path, help="a geoseg output folder (<item>/labels.tif|labels.nii.gz)")
    ev.add_argument("ref_dir", type=Path, help="reference labels: <item>.tif|.nii.gz|.nii or <item>/labels.*")
    ev.add_argument("--out", type=Path, default=None, help="where to write evaluation*.csv/json (default PRED_DIR)")
    ev.add_argument("--classes", default="", metavar="K[,K]", help="class indices (default: every label seen)")
    ev.add_argument("--include-background", action="store_true", help="also evaluate label 0")
    ev.add_argument("--no-hausdorff", action="store_true", help="skip HD95 (the slow part on big images)")

    subm = sub.add_parser("submit", help="run a workflow on a Ray cluster through the Ray Jobs API")
    subm.add_argument("workflow", type=Path)
    subm.add_argument("--address", required=True, help="the dashboard, e.g. http://HEAD:8265")
    subm.add_argument("--wait", action="store_true", help="follow the job's log until it ends")
    subm.add_argument("--force", action="store_true", help="reprocess items the ledger records as done")
    jl = sub.add_parser("jobs", help="list the jobs of a Ray cluster")
    jl.add_argument("--address", required=True, help="the dashboard, e.g. http://HEAD:8265")
    lg = sub.add_parser("logs", help="print a job's log")
    lg.add_argument("job_id")
    lg.add_argument("--address", required=True, help="the dashboard, e.g. http://HEAD:8265")
    lg.add_argument("--follow", action="store_true", help="keep printing until the job ends")

    status = sub.add_parser("status", help="print the run ledger of an output directory")
    status.add_argument("out", help="a job's output folder, or the s3:// location it published to")

    sub.add_parser("formats", help="list the input and output formats (inputs.format, output.formats)")

    ch = sub.add_parser("change", help="what changed between two label maps (or two runs' output folders)")
    ch.add_argument("before", type=Path, help="a label map (labels.tif) or a run's output folder")
    ch.add_argument("after", type=Path, help="the same for the later date")
    ch.add_argument("--out", type=Path, required=True, help="change.tif, transitions.csv, net_change.csv go here")
    ch.add_argument("--reproject", action="store_true",
                    help="resample AFTER onto BEFORE's grid (nearest) when the grids differ (else refused)")

    demo = sub.add_parser("demo", help="run a built-in demo on generated data")
    demo.add_argument("which", choices=["landcover", "ct", "stac"])
    demo.add_argument("--out", type=Path, default=Path("demo-output"))
    demo.add_argument("--address")
    demo.add_argument("--dicom", action="store_true",
                      help="ct: export the phantoms as DICOM series and run on those (NIfTI and DICOM SEG out)")
    return p


def format_lines() -> list[str]:
    """The registry (:mod:`geoseg_pipeline.formats`) as a table: inputs, then outputs."""
    from .formats import FORMATS, OUTPUTS

    lines = ["inputs (inputs.format; auto picks by name):"]
    for f in FORMATS:
        lines.append(f"  {f.name:<8} {f.kind:<7} {', '.join(f.suffixes):<14} {f.description}")
    lines.append("outputs (output.formats; * = the default):")
    for o in OUTPUTS:
        lines.append(f"  {o.name:<8} {o.kind:<7} {'*' if o.default else ' ':<14} {o.description}")
    return lines


def _change(before: Path, after: Path, out: Path, reproject: bool) -> int:
    from .change import change_runs

    runs = change_runs(before, after, out, reproject)
    for item, r in runs.done.items():
        changed = int(r.counts.sum()) - int(r.counts.trace())
        print(f"{item}: {changed} of {int(r.counts.sum())} pixels changed class; {r.change_map}, {r.transitions}, "
              f"{r.net_change}")
    for item, where in runs.unmatched.items():
        print(f"  not compared {item}: {where}")
    for item, reason in runs.failed.items():
        print(f"  FAILED {item}: {reason}")
    if runs.failed or runs.unmatched:
        print(f"{len(runs.done)} item(s) compared, {len(runs.failed)} failed, {len(runs.unmatched)} in one folder only")
    return 1 if runs.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 only when every item succeeded."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # highdicom logs each step of building a DICOM SEG at INFO (frames, segments): noise in a job's log
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    progress = False if args.no_progress else None
    try:
        if args.command == "validate":
            return _validate(args.workflow)
        if args.command == "status":
            return _status(args.out)
        if args.command == "formats":
            print("\n".join(format_lines()))
            return 0
        if args.command == "change":
            return _change(args.before, args.after, args.out, args.reproject)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command in ("submit", "jobs", "logs"):
            return _cluster_jobs(args)
        remote: str | None = None  # the s3:// URI the outputs are published to
        if args.command == "run":
            from .api import run_workflow
            from .spec import load_workflow

            spec = load_workflow(args.workflow)
            remote = spec.output.remote
            result = run_workflow(spec, address=args.address, progress=progress, force=args.force)
        elif args.command == "predict":
            from .api import predict
            from .storage import is_s3

            remote = args.out.rstrip("/") if is_s3(args.out) else None
            roi = args.roi_size[0] if args.roi_size and len(args.roi_size) == 1 else args.roi_size
            result = predict(
                args.inputs, args.model, args.out, roi_size=roi, overlap=args.overlap, blend=args.blend,
                batch_size=args.batch_size, workers=args.workers,
                classes=args.classes.split(",") if args.classes else None,
                formats=_formats(args), address=args.address,
                lesion_classes=_lesion_classes(args.lesion_classes),
                orientation=args.orientation, spacing=args.spacing, block_size=args.block_size,
                input_format=args.input_format, progress=progress, force=args.force,
                folds=args.folds.split(",") if args.folds else None, mirroring=not args.no_mirroring,
                assets=[a.strip() for a in args.assets.split(",") if a.strip()] if args.assets else None,
                mask=_mask(args.mask) if args.mask else None,
                background_threshold=args.background_threshold,
                variables=[v.strip() for v in args.variables.split(",") if v.strip()] if args.variables else None,
            )
        else:
            from .demo.run import run_ct_demo, run_landcover_demo

            if args.which == "ct":
                result = run_ct_demo(args.out, address=args.address, progress=progress, dicom=args.dicom)
            elif args.dicom:
                raise SpecError("--dicom is for the ct demo", [("demo", f"--dicom with {args.which}")])
            elif args.which == "stac":
                from .demo.stac_demo import run_stac_demo

                result = run_stac_demo(args.out, address=args.address, progress=progress)
            else:
                result = run_landcover_demo(args.out, address=args.address, progress=progress)
    except SpecError as exc:
        print(f"geoseg: invalid workflow: {exc}", file=sys.stderr)
        return 2
    except GeosegError as exc:
        print(f"geoseg: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("geoseg: interrupted; the items finished so far are kept: run the same command again to go on "
              "from there", file=sys.stderr)
        return 130
    print("\n".join(report_lines(result, remote)))
    return 0 if result.ok else 1


def _lesion_classes(text: str) -> list[int]:
    """``--lesion-classes 2,3`` -> ``[2, 3]``.

    Raises:
        SpecError: not class numbers.
    """
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise SpecError(f"--lesion-classes takes class numbers (K[,K]), got {text!r}",
                        [("--lesion-classes", "expected class numbers such as 2 or 2,3")]) from None


def _mask(text: str) -> dict[str, object]:
    """``SCL:0,1,3`` -> ``{"asset": "SCL", "invalid": [0, 1, 3]}``; ``QA_PIXEL:bits=1,3`` ->
    ``{"asset": "QA_PIXEL", "bits": [1, 3]}``.

    Raises:
        SpecError: not of that form.
    """
    asset, _, rule = text.rpartition(":")
    bits = rule.startswith("bits=")
    try:
        values = [int(v) for v in rule.removeprefix("bits=").split(",") if v.strip()]
    except ValueError:
        values = []
    if not asset or not values:
        raise SpecError(f"--mask must be ASSET:V[,V] or ASSET:bits=B[,B], got {text!r}",
                        [("--mask", "expected ASSET:V[,V] or ASSET:bits=B[,B]")])
    return {"asset": asset, "bits" if bits else "invalid": values}


def _formats(args: argparse.Namespace) -> tuple[str, ...] | None:
    raster = [*(["--logits"] if args.logits else []), *(f"--vector {v}" for v in args.vector)]
    volume_flags = [*(["--zarr"] if args.zarr else []), *(["--dicom-seg"] if args.dicom_seg else [])]
    if raster and volume_flags:
        raise SpecError(f"{raster[0]} is for rasters and {volume_flags[0]} for volumes; give one",
                        [("formats", "both given")])
    if raster:
        return ("cog", *(("logits",) if args.logits else ()), *dict.fromkeys(args.vector))
    volume = ("nifti", *(("zarr",) if args.zarr else ()), *(("dicom-seg",) if args.dicom_seg else ()))
    return volume if len(volume) > 1 else None


def _validate(path: Path) -> int:
    from .spec import load_workflow

    try:
        spec = load_workflow(path)
    except SpecError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for field, message in exc.problems:
            print(f"  {field}: {message}", file=sys.stderr)
        return 2
    from .errors import GeosegError
    from .sources.discovery import discover
    from .storage import S3Config, is_s3, needs_s3

    items = []
    problems: list[tuple[str, str]] = []
    try:
        # the environment is read here, once, as a job's driver reads it
        s3 = S3Config.from_env() if needs_s3(spec.inputs.locations) else None
        found = discover(spec.inputs, spec.tiling.kind, s3, spec.output.directory)
        items = list(found.items)
        problems += [("inputs", m) for m in found.unmatched]
    except SpecError as exc:
        problems += exc.problems
    except GeosegError as exc:  # no item at all; an object store that cannot be listed
        problems.append(("inputs", str(exc)))
    problems += [("inputs", i.error) for i in items if i.error is not None]
    problems += [("inputs.paths", f"{i.path}: no such file") for i in items
                 if i.error is None and i.stac is None and not is_s3(i.path) and not Path(i.path).exists()]
    # an nnU-Net model's path is a folder and its checkpoint a name inside each fold: the spec
    # read the folder already
    for field in () if spec.model.type in ("nnunet", "huggingface") else ("path", "checkpoint"):
        file = getattr(spec.model, field)
        if file is not None and not file.is_file():
            problems.append((f"model.{field}", f"{file}: no such file"))
    if spec.model.type == "huggingface" and spec.model.path is not None and not spec.model.path.is_dir():
        problems.append(("model.path", f"{spec.model.path}: no such folder"))
    elif spec.model.type == "huggingface" and spec.model.path is not None:
        from .spec.prompts import pretrained_model_type, prompt_mismatch

        mismatch = prompt_mismatch(pretrained_model_type(spec.model.path),
                                   spec.predictor_model.text_classes is not None)
        if mismatch is not None:
            problems.append(("classes", f"{spec.model.path}: {mismatch}"))
    zones = spec.statistics.zones
    if zones is not None:
        from .statistics import read_zones

        try:
            read_zones(zones.path, zones.id_field, zones.layer)
        except GeosegError as exc:
            problems.append(("statistics.zones", str(exc).removeprefix("statistics.zones: ")))
    if problems:
        print(f"{path}: invalid", file=sys.stderr)
        for field, message in problems:
            print(f"  {field}: {message}", file=sys.stderr)
        return 2
    print(f"{path}: valid ({len(items)} item(s), model {spec.model.source}, "
          f"output {spec.output.remote or spec.output.directory})")
    return 0


def _cluster_jobs(args: argparse.Namespace) -> int:
    from .runtime import submit as jobs_api

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.command == "jobs":
        for j in jobs_api.jobs(args.address):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((j.start_time or 0) / 1000))
            name = (j.metadata or {}).get("workflow", "")
            print(f"{j.submission_id or j.job_id}  {str(j.status).rsplit('.', 1)[-1]:<9}  {started}  {name}")
        return 0
    if args.command == "logs":
        if args.follow:
            status = jobs_api.wait(args.address, args.job_id, echo)
            return 0 if status == "SUCCEEDED" else 1
        echo(jobs_api.logs(args.address, args.job_id))
        return 0
    job_id = jobs_api.submit(args.workflow, args.address, force=args.force)
    print(f"submitted {job_id} to {args.address}")
    if not args.wait:
        print(f"follow it with: geoseg logs {job_id} --address {args.address} --follow")
        return 0
    status = jobs_api.wait(args.address, job_id, echo)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate  # imports torch and MONAI

    classes = [int(k) for k in args.classes.split(",") if k.strip()] or None
    result = evaluate(args.pred_dir, args.ref_dir, args.out, classes=classes,
                      include_background=args.include_background, hausdorff=not args.no_hausdorff)
    print_evaluation(result)
    return 1 if result.not_evaluated else 0


def print_evaluation(result: EvaluationResult) -> None:
    """A short table of the per-class means, and the items that could not be evaluated."""
    print(f"{len(result.evaluated)} item(s) evaluated, {len(result.not_evaluated)} not")
    for c in result.summary:
        parts = []
        for m in c.metrics:
            if m.metric in ("dice", "iou") or m.metric.startswith("hd95"):
                parts.append(f"{m.metric} {m.mean:.4f} (n={m.n})" if m.mean is not None else f"{m.metric} -")
        print(f"  {c.class_index} {c.class_name}: " + ", ".join(parts))
    for e in result.not_evaluated:
        print(f"  NOT EVALUATED {e.item}: {e.status}: {e.error}")
    if result.outputs:
        print(f"evaluation: {result.outputs[0]}")


def _status(given: str) -> int:
    """Print the ledger of the folder ``given`` (or of an ``s3://`` output location, as its last
    run published it); 1 when there is none, 0 otherwise (also when it is empty)."""
    from .api import ledger_rows
    from .ledger import LEDGER_NAME
    from .storage import is_s3, is_uri, local_path

    local = local_path(given)  # file:///a -> /a
    if is_s3(local):
        return _status_published(given)
    out = Path(local)
    problem = None
    if is_uri(local):  # printed as given: Path would make gs://b/p into gs:/b/p
        problem = (f"status reads a local output folder or an s3:// location; copy {given.rstrip('/')}/"
                   f"{LEDGER_NAME} into a folder (or give the job's staging folder)")
    elif not out.exists():
        problem = "no such folder"
    elif not out.is_dir():
        problem = "not a folder (give a job's output directory)"
    elif not (out / LEDGER_NAME).is_file():
        problem = f"no run ledger ({LEDGER_NAME}) here: no geoseg run has written to this folder"
    if problem is not None:
        print(f"{given}: {problem}", file=sys.stderr)
        return 1
    return _print_ledger(given, ledger_rows(out))


def _status_published(given: str) -> int:
    """``geoseg status s3://...``: the ledger a run published there (at its end: a run that is
    still going shows its predecessor's), fetched into a temporary folder as a run fetches it."""
    import tempfile

    from .api import ledger_rows
    from .errors import SinkError
    from .ledger import LEDGER_NAME
    from .sinks.publish import OutputLocation, Publisher
    from .storage import S3Config

    uri = given.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="geoseg-status-") as folder:
        try:
            publisher = Publisher(OutputLocation(uri, Path(folder)), S3Config.from_env())
            found = publisher.fetch_file(LEDGER_NAME, Path(folder) / LEDGER_NAME)
        except (SinkError, ValueError) as exc:
            print(f"{given}: cannot read its run ledger: {exc}", file=sys.stderr)
            return 1
        if not found:
            print(f"{given}: no run ledger ({LEDGER_NAME}) there: no geoseg run has published to this location",
                  file=sys.stderr)
            return 1
        print(f"{uri}/{LEDGER_NAME}: as the last run published it (at its end)")
        return _print_ledger(given, ledger_rows(folder))


def _print_ledger(given: str, rows: Sequence[LedgerRow]) -> int:
    if not rows:
        print(f"{given}: no items recorded yet (a run started here but did not get to any item)")
        return 0
    width = max(len(r.item) for r in rows)
    print(f"{'item':<{width}}  {'status':<8} {'seconds':>8}  {'finished':<19}  run / error")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.finished)) if r.finished else "-"
        secs = f"{r.seconds:.1f}" if r.seconds is not None else "-"
        print(f"{r.item:<{width}}  {r.status:<8} {secs:>8}  {when:<19}  {r.error or r.run_id}")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "failed", "running")}
    extra = sorted({r.status for r in rows} - set(counts))  # states of newer ledgers, e.g. interrupted
    others = "".join(f", {sum(r.status == s for r in rows)} {s}" for s in extra)
    print(f"{len(rows)} item(s): {counts['ok']} ok, {counts['failed']} failed, {counts['running']} running{others} "
          "(running after a run ended: it was interrupted)")
    return 0


def report_lines(result: JobResult, remote: str | None = None) -> list[str]:
    """What ``geoseg run|predict|demo`` prints when a job ends: counts, each item's output folder,
    the failures and the summary.

    Locations are printed as the job has them, a URI as a URI (never ``s3:/b/p`` from a
    ``Path``). ``remote``: the ``s3://`` URI the outputs were published to, for the summary,
    which ``result`` names in the local staging folder.
    """
    ok = [o for o in result.outcomes if o.status == "ok"]
    skipped = [o for o in result.outcomes if o.status == "skipped"]
    failed = [o for o in result.outcomes if o.status == "failed"]
    done_before = f", {len(skipped)} skipped (done by an earlier run)" if skipped else ""
    lines = [f"{len(ok)} item(s) done, {len(failed)} failed{done_before} in {result.seconds:.1f} s"]
    pixels = sum(o.stats.valid_pixels + o.stats.nodata_pixels for o in ok if o.stats is not None)
    windows = sum(o.windows for o in ok)
    if pixels:
        lines.append(f"  {pixels / 1e6:.1f} M pixels/voxels, {windows} windows, "
                     f"{pixels / 1e6 / max(result.seconds, 1e-9):.2f} M/s over the whole run")
    lines += [f"  {o.item}: {_folder(o.outputs[0])}/" for o in ok]
    lines += [f"  FAILED {o.item}: {o.error}" for o in failed]
    summary = result.summary_paths[0]
    if remote is not None:
        lines.append(f"summary: {remote}/{summary.relative_to(result.out_dir).as_posix()}")
    else:
        lines.append(f"summary: {summary}")
    return lines


def _folder(location: str) -> str:
    """The folder of an output file: a local path's parent, or a URI up to its last ``/``."""
    from .storage import is_uri

    return location.rsplit("/", 1)[0] if is_uri(location) else str(Path(location).parent)


if __name__ == "__main__":
    sys.exit(main())
