"""Typed, frozen workflow schema. Unknown keys are errors; see ``docs/workflow.md``."""

from __future__ import annotations

import glob
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..formats import FORMAT_NAMES, OUTPUTS, Kind, formats_for
from ..storage.uri import SCHEMES, unknown_scheme
from .base import DicomWebSpec
from .base import Frozen as _Frozen
from .classes import ClassSpec
from .inference import EvaluationSpec, InferenceSpec
from .output import OutputSpec, StatisticsSpec
from .prompts import TextClasses, prompt_problems, text_classes
from .stac import MaskSpec, StacSpec
from .vision import VISION_FIELDS, VISION_NEEDS, smp_problems


class InputSpec(_Frozen):
    """Where the items come from: ``paths``, a ``manifest``, or both (paths first).

    ``paths`` are files, folders, glob patterns (``**`` allowed) or ``s3://bucket/key`` URIs
    (globs too), relative to the workflow file. A Zarr store is one item; any other folder
    stands for the supported files below it. ``manifest`` is a CSV file with a ``uri`` or
    ``path`` column (plus an optional ``item`` column naming the output, and metadata columns)
    or a text file with one path or URI per line; its relative entries are relative to itself.
    See :mod:`geoseg_pipeline.sources.discovery`.
    """

    #: URI schemes ``paths`` and ``manifest`` may use; a plain path has none.
    SCHEMES: ClassVar[tuple[str, ...]] = SCHEMES

    # manifest and dicomweb first: the check of paths needs them
    dicomweb: DicomWebSpec | None = Field(
        default=None, description="Series found on a DICOMweb server (QIDO-RS) instead of, or besides, paths."
    )
    manifest: str | None = Field(
        default=None, description="A CSV (uri/path column, optional item and metadata columns) or text list of items."
    )
    stac: StacSpec | None = Field(
        default=None, description="Items from STAC documents, their bands from separate assets (docs/stac.md)."
    )
    paths: tuple[str, ...] = Field(default=(), validate_default=True)
    format: str = Field(default="auto", description="auto, or a format of geoseg_pipeline.formats: "
                        + ", ".join(FORMAT_NAMES) + ".")
    channel_axis: Annotated[int, Field(ge=0, le=3)] | None = Field(
        default=None, description="Volumes: the on-disk axis holding channels (3 for a 4D NIfTI)."
    )
    nodata: float | None = Field(
        default=None, description="Override the items' nodata value (use .nan for NaN)."
    )
    mask: MaskSpec | None = Field(
        default=None, description="A quality asset of each STAC item marking pixels to leave out (clouds, ...)."
    )
    variables: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)] | None = Field(
        default=None, description="format: xarray-zarr: the cube's variables that are the bands, in the model's "
        "channel order (a (band, y, x) variable's name gives all its bands; variable:label one); default: every "
        "variable on the (y, x) grid, by name (docs/xarray.md)."
    )
    max_pixels: Annotated[int, Field(ge=1)] = Field(
        default=2**36, description="The most pixels (rasters) or voxels (volumes) an item may declare; "
        "a larger one is refused before anything is allocated (a damaged header, most likely). "
        "The default, 2^36, is a 262144 x 262144 raster or a 4096 x 4096 x 4096 volume."
    )

    @field_validator("paths")
    @classmethod
    def _known_schemes(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value and "manifest" in info.data and info.data["manifest"] is None \
                and info.data.get("dicomweb") is None and "stac" in info.data and info.data["stac"] is None:
            raise ValueError("needs at least 1 entry (a file, folder, glob or s3:// URI) unless a manifest, "
                             "a dicomweb server or a STAC catalog is given")
        if value and info.data.get("stac") is not None:
            raise ValueError("inputs.stac.catalog names the items of a STAC job: leave paths out")
        bad = [p for p in value if not p.strip() or cls._unknown_scheme(p)]
        if bad:
            raise ValueError(f"{bad}: each entry must be a path, a glob or a URI with scheme "
                             f"{', '.join(s + '://' for s in cls.SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _dicomweb_is_dicom(self) -> InputSpec:
        if self.dicomweb is not None and self.format not in ("auto", "dicom"):
            raise ValueError(f"dicomweb gives DICOM series: format must be auto or dicom, got {self.format!r}")
        if self.stac is not None and (self.manifest is not None or self.dicomweb is not None):
            raise ValueError("inputs.stac names the items of a STAC job: leave manifest and dicomweb out")
        if self.stac is not None and self.format not in ("auto", "stac"):
            raise ValueError(f"inputs.stac gives STAC items: format must be auto or stac, got {self.format!r}")
        if self.variables is not None and self.format != "xarray-zarr":
            raise ValueError(f"inputs.variables names the bands of a Zarr datacube: it needs format: xarray-zarr, "
                             f"got {self.format!r}")
        if self.mask is not None and self.stac is None:
            raise ValueError("inputs.mask names an asset of STAC items: it needs inputs.stac")
        return self

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMAT_NAMES:
            raise ValueError(f"format must be auto or one of {', '.join(FORMAT_NAMES)}, got {value!r}")
        return value

    @field_validator("manifest")
    @classmethod
    def _manifest_location(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or cls._unknown_scheme(value) or glob.has_magic(value)):
            raise ValueError(f"manifest must be one file (a path or {', '.join(s + '://' for s in cls.SCHEMES)} "
                             f"URI, no glob), got {value!r}")
        return value

    @classmethod
    def _unknown_scheme(cls, path: str) -> bool:
        return unknown_scheme(path) is not None

    @property
    def locations(self) -> tuple[str, ...]:
        """Every location the section names: paths, the manifest, STAC documents."""
        return (*self.paths, *([self.manifest] if self.manifest else []),
                *(self.stac.catalog if self.stac is not None else ()))


#: The fields each model type takes (besides ``in_channels`` and ``num_classes``).
_MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "builtin": ("name",),
    "torchscript": ("path",),
    "onnx": ("path",),
    "monai": ("network", "args", "checkpoint", "trust_pickle"),
    "bundle": ("bundle", "checkpoint", "trust_code", "trust_pickle"),
    "python": ("import_path", "args", "checkpoint", "trust_code", "trust_pickle"),
    "nnunet": ("path", "folds", "checkpoint", "configuration", "mirroring", "trust_code"),
    "huggingface": ("path", "trust_code", "trust_pickle", "text_classes"),
    **VISION_FIELDS,
}

#: What each model type cannot do without, and a hint.
_MODEL_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "builtin": (("name", "for example landcover-demo"),),
    "torchscript": (("path", "the TorchScript file"),),
    "onnx": (("path", "the .onnx file"),),
    "monai": (("network", "a class in monai.networks.nets, for example UNet"),
              ("checkpoint", "the state dict file; an untrained network predicts noise")),
    "bundle": (("bundle", "the MONAI bundle folder, holding configs/inference.json and models/model.pt"),),
    "python": (("import_path", "package.module:ClassName"),),
    "nnunet": (("path", "the trained model folder <Trainer>__<Plans>__<configuration>"),),
    "huggingface": (("path", "a folder saved with save_pretrained: config.json, model.safetensors, "
                     "preprocessor_config.json"),),
    **VISION_NEEDS,
}

#: A Hugging Face folder's weights: safetensors (read as tensors), or pickle (may run code).
HF_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
HF_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def is_pretrained_folder(path: Path) -> bool:
    """Whether ``path`` looks like a folder saved with transformers' ``save_pretrained``: a
    ``config.json`` beside weights."""
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in (*HF_SAFE_WEIGHTS, *HF_PICKLE_WEIGHTS))


def pretrained_label_names(path: Path, num_classes: int) -> tuple[str, ...] | None:
    """The class names of a ``save_pretrained`` folder (``config.json``'s ``id2label``), when it
    names each of ``num_classes`` classes; else ``None``."""
    try:
        labels = json.loads((path / "config.json").read_text(encoding="utf-8")).get("id2label") or {}
        names = tuple(str(labels[str(i)]) for i in range(num_classes))
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    # transformers' placeholders (LABEL_0, ...) name nothing
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_MONAI_NETS = "monai.networks.nets."


class ModelSpec(_Frozen):
    """The segmentation model, by ``type``:

    - ``builtin``: ``name``.
    - ``torchscript``: ``path`` to a TorchScript file.
    - ``onnx``: ``path`` to an ONNX file (onnxruntime; ``pip install geoseg-pipeline[onnx]``).
    - ``monai``: ``network``, a class in ``monai.networks.nets``, built with ``args``, weights
      from ``checkpoint`` (a state dict).
    - ``bundle``: a MONAI bundle folder, ``bundle``: the network from its
      ``configs/inference.json`` (or ``.yaml``), the weights from ``models/model.pt`` (or
      ``checkpoint``); the bundle's roi, overlap, orientation, spacing and intensity fill what
      the workflow leaves unset.
    - ``python``: any class, ``import_path: package.module:ClassName`` with ``args`` and an
      optional ``checkpoint``; it runs code, so it needs ``trust_code: true``.
    - ``nnunet``: an nnU-Net v2 trained model folder, ``path``
      (``<Trainer>__<Plans>__<configuration>/``), its ``folds`` (default: every fold holding
      the checkpoint), ``checkpoint`` (a file name in each ``fold_<k>/``, default
      ``checkpoint_final.pth``), ``mirroring`` (default true, as ``nnUNetv2_predict``); run as
      nnU-Net's predictor runs it (preprocessing, tiles, gaussian, export). Needs
      ``pip install 'geoseg-pipeline[nnunet]'``.
    - ``huggingface``: a transformers segmentation model folder saved with ``save_pretrained``,
      ``path`` (SegFormer, UperNet, DPT, BEiT, MobileViT, Mask2Former, MaskFormer, ...): each
      window normalized by its image processor, logits at the window's size as transformers'
      post-processing makes them. Safetensors weights only unless ``trust_pickle``; code in the
      folder only with ``trust_code``. Needs ``pip install 'geoseg-pipeline[huggingface]'``.
    - ``smp``: a segmentation_models_pytorch ``architecture`` (``Unet``, ``DeepLabV3Plus``, ...)
      built with ``args`` (``encoder_weights`` null or absent: nothing is downloaded), weights
      from ``checkpoint``. ``torchgeo``: a TorchGeo ``SemanticSegmentationTask`` Lightning
      ``checkpoint`` (the network built from its hyper-parameters). Both need
      ``pip install 'geoseg-pipeline[vision]'`` (see :mod:`.vision`).

    Checkpoints are read as tensors only (``torch.load(weights_only=True)``); a pickled model
    object needs ``trust_pickle: true``. A bundle's ``network_def`` may name classes of
    ``monai.networks.nets`` only, without ``$`` expressions, unless ``trust_code: true``.
    ``in_channels`` and ``num_classes``, when given, are checked against the model before any
    data is read.
    """

    type: Literal["builtin", "torchscript", "onnx", "monai", "bundle", "python", "nnunet", "huggingface", "smp",
                  "torchgeo"]
    name: str | None = None
    path: Path | None = None
    network: str | None = None
    architecture: str | None = Field(default=None, description="smp: a class of segmentation_models_pytorch.")
    args: dict[str, Any] | None = Field(default=None, description="monai, python: constructor keyword arguments.")
    checkpoint: Path | None = Field(default=None, description="monai, python, bundle: a state dict file.")
    bundle: Path | None = None
    import_path: str | None = None
    trust_code: bool = False
    trust_pickle: bool = False
    in_channels: Annotated[int, Field(ge=1)] | None = None
    num_classes: Annotated[int, Field(ge=1, le=65535)] | None = None
    folds: tuple[str, ...] | None = Field(default=None, description="nnunet: folds to ensemble (0, 1, ..., all).")
    configuration: str | None = Field(default=None, description="nnunet: default from the folder name.")
    mirroring: bool = Field(default=True, description="nnunet: test-time mirroring over the allowed axes.")
    text_classes: TextClasses | None = Field(
        default=None, description="huggingface, text-prompted (CLIPSeg): the prompts; a workflow gives them as "
        "classes[].prompt (see WorkflowSpec.predictor_model).")

    @field_validator("folds", mode="before")
    @classmethod
    def _fold_names(cls, value: object) -> object:
        if isinstance(value, (int, str)):
            value = [value]
        if isinstance(value, (list, tuple)):
            out = tuple(str(v).strip() for v in value)
            bad = [v for v in out if not (v.isdigit() or v == "all")]
            if bad or not out:
                raise ValueError(f"folds are fold numbers or 'all', got {list(value)}")
            return out
        return value

    @field_validator("network")
    @classmethod
    def _network_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.removeprefix(_MONAI_NETS)
        if not name.isidentifier():
            raise ValueError(f"network must be a class name in monai.networks.nets (for example UNet), got {value!r}; "
                             "for other classes use type: python with import_path")
        return name

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.match(value):
            raise ValueError(f"import_path must look like package.module:ClassName, got {value!r}")
        return value

    @model_validator(mode="after")
    def _source(self) -> ModelSpec:
        problems = [f"type {self.type!r} needs {field!r} ({hint})"
                    for field, hint in _MODEL_NEEDS[self.type] if getattr(self, field) is None]
        if self.type == "smp":
            problems += smp_problems(self.architecture, self.args, self.in_channels, self.num_classes)
        if self.type == "python" and not self.trust_code:
            problems.append("type 'python' imports and runs import_path: set trust_code: true "
                            "if you trust that code")
        for field in sorted(self.model_fields_set - {"type", "in_channels", "num_classes"}):
            # a key left at its default is no problem (a dumped spec holds every default)
            if field not in _MODEL_FIELDS[self.type] and getattr(self, field) != type(self).model_fields[field].default:
                users = [t for t, fields in _MODEL_FIELDS.items() if field in fields]
                problems.append(f"{field!r} is not used by type {self.type!r} (it goes with {', '.join(users)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def source(self) -> str:
        """Where the model comes from, for messages: a file, a folder or a name."""
        if self.type == "builtin":
            return f"built-in model {self.name}"
        if self.type == "bundle":
            return f"bundle {self.bundle}"
        if self.type == "nnunet":
            return f"nnU-Net model {self.path}"
        if self.type == "huggingface":
            return f"Hugging Face model {self.path}"
        what = {"monai": f"MONAI {self.network}", "python": str(self.import_path),
                "smp": f"segmentation_models_pytorch {self.architecture}"}.get(self.type)
        if self.type == "torchgeo":
            return f"TorchGeo checkpoint {self.checkpoint}"
        if what is None:
            return str(self.path)
        return f"{what} ({self.checkpoint})" if self.checkpoint is not None else what


class NormalizeSpec(_Frozen):
    """Per-band ``(x - mean) / std``, one entry per selected band."""

    mean: Annotated[tuple[float, ...], Field(min_length=1)]
    std: Annotated[tuple[float, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _lengths(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} entries but std has {len(self.std)}")
        if any(s <= 0 or not math.isfinite(s) for s in self.std):
            raise ValueError(f"std must be positive and finite, got {list(self.std)}")
        return self


class IntensitySpec(_Frozen):
    """Volume intensity preparation.

    ``window``: CT window, ``clip(x, lo, hi)`` scaled to [0, 1] (MONAI ``ScaleIntensityRange``
    with ``clip=True``). ``zscore_nonzero``: MR z-score over the item's nonzero voxels, zeros
    kept at 0 (MONAI ``NormalizeIntensity(nonzero=True)``); the statistics come from one pass
    over the item, slab by slab.
    """

    mode: Literal["window", "zscore_nonzero"]
    window: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _window(self) -> IntensitySpec:
        if self.mode == "window":
            if self.window is None:
                raise ValueError("mode 'window' needs window: [low, high] (for example [-150, 250])")
            if not self.window[0] < self.window[1]:
                raise ValueError(f"window must be [low, high] with low < high, got {list(self.window)}")
        elif self.window is not None:
            raise ValueError("window goes with mode 'window' only")
        return self


class PreprocessingSpec(_Frozen):
    """Band selection (1-based, as GDAL and rasterio number bands) and normalization.

    With nothing configured, a window reaches the model as float32 of the stored values.
    """

    bands: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)] | None = None
    normalize: NormalizeSpec | None = None
    intensity: IntensitySpec | None = None
    orientation: str | None = Field(
        default=None,
        description="Volumes: the model's axis codes (e.g. RAS); windows are reoriented (permuted and flipped).",
    )

    spacing: tuple[float, float, float] | None = Field(
        default=None,
        description="Volumes: the model's voxel size in mm, in the model's axis order (after orientation); "
        "windows are resampled linearly to it and the labels mapped back by nearest neighbour.",
    )

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {list(value)}")
        return value

    @field_validator("orientation")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        axis_of = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        if len(code) != 3 or sorted(axis_of.get(c, -1) for c in code) != [0, 1, 2]:
            raise ValueError(f"orientation must be 3 axis codes, one of L/R, A/P, S/I each (e.g. RAS), got {value!r}")
        return code

    @model_validator(mode="after")
    def _one_normalization(self) -> PreprocessingSpec:
        if self.normalize is not None and self.intensity is not None and self.intensity.mode == "zscore_nonzero":
            raise ValueError("use either normalize (fixed mean/std) or intensity zscore_nonzero, not both")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessingSpec:
        if self.bands is not None and self.normalize is not None and len(self.normalize.mean) != len(
            self.bands
        ):
            raise ValueError(
                f"normalize has {len(self.normalize.mean)} entries but {len(self.bands)} bands are selected"
            )
        return self


class TilingSpec(_Frozen):
    """The sliding-window grid (MONAI's) and how windows are blended."""

    roi_size: tuple[Annotated[int, Field(ge=1)], ...] = (256, 256)
    overlap: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    blend: Literal["constant", "gaussian", "nnunet", "nnunet2d"] = "gaussian"
    #: whose window starts: MONAI's ``sliding_window_inference`` or nnU-Net's (step ``1 - overlap``)
    grid: Literal["monai", "nnunet"] = "monai"
    sigma_scale: Annotated[float, Field(gt=0.0)] = 0.125
    #: windows per forward pass; ``None``: 8 on a CPU, on a GPU what fits in its free memory
    batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    block_size: Annotated[int, Field(ge=16)] | None = None

    @field_validator("roi_size", mode="before")
    @classmethod
    def _scalar_roi(cls, value: object) -> object:
        if isinstance(value, int):
            return (value, value)
        return value

    @field_validator("roi_size")
    @classmethod
    def _two_or_three_d(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (2, 3):
            raise ValueError(
                f"roi_size needs 2 numbers (rows, cols) for rasters or 3 (i, j, k) for volumes, got {list(value)}"
            )
        return value

    @field_validator("block_size")
    @classmethod
    def _tile_multiple(cls, value: int | None) -> int | None:
        if value is not None and value % 16:
            raise ValueError(f"block_size must be a multiple of 16 (GeoTIFF tiles), got {value}")
        return value

    @property
    def spatial_dims(self) -> int:
        """2 for rasters, 3 for volumes (the length of ``roi_size``)."""
        return len(self.roi_size)

    @property
    def kind(self) -> Kind:
        """The items' kind: ``raster`` for a 2D roi, ``volume`` for a 3D one."""
        return "volume" if len(self.roi_size) == 3 else "raster"

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Output block shape: ``block_size`` per axis (default 512 for rasters, 128 for volumes)."""
        size = self.block_size or (512 if self.spatial_dims == 2 else 128)
        return (size,) * self.spatial_dims


class ResourceSpec(_Frozen):
    """Ray actors: how many, and what each holds. ``workers: null`` means one per CPU slot."""

    workers: Annotated[int, Field(ge=1)] | None = None
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0.0
    max_tasks_in_flight: Annotated[int, Field(ge=1)] = 2
    gdal_cache_mb: Annotated[int, Field(ge=8, le=65536)] = 64
    max_restarts: Annotated[int, Field(ge=0)] = 3
    """An actor whose process dies is restarted this many times (on another node when its node is
    gone and another has room); the bands it held run again on the actors that serve."""
    read_retries: Annotated[int, Field(ge=0, le=10)] = 3
    """A window read that fails with an I/O error is retried this many times, with backoff."""
    placement_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Seconds to wait for every Ray actor to be placed on a node and its process started; the
    job fails if they are not. Loading the model comes after and is not counted (a large model
    may take minutes). Raise it on an autoscaling cluster whose nodes take longer to start, or
    on a cluster shared with other jobs."""
    backend: Literal["auto", "ray", "local"] = "auto"
    """Where tile tasks run: ``ray`` actors (a local Ray, or the cluster given by ``--address``),
    or ``local`` threads of the job's own process (no Ray start-up; no actor restarts).
    ``auto``: local for a job of one item on this machine, Ray otherwise."""


class WorkflowSpec(_Frozen):
    """A whole workflow: inputs -> model -> preprocessing -> tiling -> output."""

    version: Literal[1] = 1
    name: str = "workflow"
    inputs: InputSpec
    model: ModelSpec
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    tiling: TilingSpec = TilingSpec()
    output: OutputSpec
    resources: ResourceSpec = ResourceSpec()
    statistics: StatisticsSpec = StatisticsSpec()
    inference: InferenceSpec = InferenceSpec()
    evaluation: EvaluationSpec | None = None
    classes: tuple[ClassSpec, ...] | None = None

    @property
    def stac_outputs(self) -> bool:
        """Whether the outputs are described as STAC (``output.stac``, by default when the
        inputs are STAC items); rasters only."""
        wanted = self.output.stac if self.output.stac is not None else self.inputs.stac is not None
        return wanted and self.tiling.kind == "raster"

    @model_validator(mode="after")
    def _cross_checks(self) -> WorkflowSpec:
        problems = cross_check(self.model, self.preprocessing, self.tiling, self.classes, self.output,
                               self.inference, self.inputs, self.statistics)
        if problems:
            raise ValueError("; ".join(f"{path}: {msg}" for path, msg in problems))
        return self

    @property
    def predictor_model(self) -> ModelSpec:
        """The model section as workers load it: with the classes' prompts (``classes[].prompt``,
        ``threshold``) for a text-prompted model."""
        text = text_classes(self.classes)
        return self.model if text is None else self.model.model_copy(update={"text_classes": text})


def cross_check(
    model: ModelSpec | None,
    preprocessing: PreprocessingSpec | None,
    tiling: TilingSpec | None,
    classes: tuple[ClassSpec, ...] | None,
    output: OutputSpec | None = None,
    inference: InferenceSpec | None = None,
    inputs: InputSpec | None = None,
    statistics: StatisticsSpec | None = None,
) -> list[tuple[str, str]]:
    """Problems between sections, as ``(field path, message)``; sections that did not validate
    on their own are passed as ``None`` and skipped."""
    problems: list[tuple[str, str]] = prompt_problems(classes, None if model is None else model.type)
    if model is not None and model.text_classes is not None and classes is not None:
        problems.append(("model.text_classes", "a workflow gives the prompts in classes[].prompt only"))
    if classes is not None:
        names = [c.name for c in classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(("classes", f"duplicate names {dupes}"))
        if model is not None and model.num_classes is not None and model.num_classes != len(classes):
            problems.append(
                ("model.num_classes", f"is {model.num_classes} but {len(classes)} classes are listed")
            )
        beyond = [k for k in (statistics.lesion_classes if statistics is not None else ()) if k >= len(classes)]
        if beyond:
            problems.append(("statistics.lesion_classes",
                             f"names class {beyond[0]} but {len(classes)} classes are listed (0..{len(classes) - 1})"))
    if (
        model is not None
        and model.in_channels is not None
        and preprocessing is not None
        and preprocessing.bands is not None
        and len(preprocessing.bands) != model.in_channels
    ):
        problems.append((
            "preprocessing.bands",
            f"selects {len(preprocessing.bands)} bands but model.in_channels is {model.in_channels}",
        ))
    if (output is not None and "dicom-seg" in (output.formats or ()) and inputs is not None
            and inputs.format != "dicom" and inputs.dicomweb is None):
        problems.append(("output.formats", "dicom-seg references the input's DICOM series: it needs inputs.format: "
                                           "dicom (or inputs.dicomweb)"))
    if tiling is not None and tiling.spatial_dims == 2 and preprocessing is not None:
        for name in ("orientation", "spacing", "intensity"):
            if getattr(preprocessing, name) is not None:
                problems.append((f"preprocessing.{name}", "applies to volumes only (tiling.roi_size has 2 numbers)"))
    if tiling is not None and output is not None and output.formats is not None:
        allowed = tuple(o.name for o in OUTPUTS if o.kind == tiling.kind)
        kind = f"{tiling.kind}s"
        for i, fmt in enumerate(output.formats):
            if fmt not in allowed:
                problems.append((f"output.formats[{i}]", f"{fmt!r} is not an output of {kind}; use {list(allowed)}"))
    if tiling is not None and inference is not None and any(a >= tiling.spatial_dims for a in inference.mirror_axes):
        problems.append(("inference.mirror_axes",
                         f"{list(inference.mirror_axes)} names an axis beyond the roi's {tiling.spatial_dims} dims"))
    if tiling is not None and tiling.block_shape[0] < max(tiling.roi_size):
        problems.append((
            "tiling.block_size",
            f"must be at least the roi size ({max(tiling.roi_size)}), got {tiling.block_shape[0]}",
        ))
    if tiling is not None and inputs is not None and inputs.format != "auto" and not formats_for(tiling.kind,
                                                                                                  inputs.format):
        usable = ", ".join(f.name for f in formats_for(tiling.kind))
        problems.append(("inputs.format", f"{inputs.format!r} holds no {tiling.kind}s (tiling.roi_size "
                                          f"has {tiling.spatial_dims} numbers); use auto or {usable}"))
    if tiling is not None and output is not None and output.min_mapping_unit is not None and tiling.kind == "volume":
        problems.append(("output.min_mapping_unit", "applies to rasters only (tiling.roi_size has 3 numbers)"))
    if tiling is not None and output is not None and output.stac and tiling.kind == "volume":
        problems.append(("output.stac", "applies to rasters only (tiling.roi_size has 3 numbers)"))
    if tiling is not None and statistics is not None and statistics.zones is not None and tiling.kind == "volume":
        problems.append(("statistics.zones", "applies to rasters only (tiling.roi_size has 3 numbers)"))
    return problems
