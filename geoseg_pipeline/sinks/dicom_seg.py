"""DICOM Segmentation output (``output.formats: [..., dicom-seg]``): ``labels.dcm`` over the
source series, for DICOM series inputs.

Written with highdicom: a BINARY Segmentation with one segment per non-background class (the
workflow's class names; coded category and type from the workflow's ``classes[].dicom``, else
SNOMED CT "Tissue"), frames only where a segment is present, each frame referencing its source
instance (``DerivationImageSequence``) and lying exactly on that slice's plane (the source's
``ImagePositionPatient``/``ImageOrientationPatient``, same frame of reference), so that viewers
(3D Slicer, OHIF) overlay it on the series. Patient and study attributes come from the source; a
new series and instance UID per run; the algorithm is identified by the model's name and hash.

Like the NIfTI sink, labels are written block by block into a memory-mapped staging file; the
SEG is built at commit from that map (highdicom takes the whole ``(slices, rows, columns)``
label array: a view of the map, paged in as it encodes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SinkError
from ..geometry import Window
from ..volumes import VolumeGrid
from .base import SinkTarget, StagedSink
from .legend import ClassLegend
from .volume_labels import check_block, label_type

SEG_NAME = "labels.dcm"

#: Type 2 attributes highdicom copies from the source; empty when a source lacks them.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")

#: SNOMED CT "Tissue" (85756007): the category and type of a class the workflow gives no code.
TISSUE = ("SCT", "85756007", "Tissue")


class DicomSegSink(StagedSink):
    """Write one DICOM series item's label map as ``labels.dcm`` (a DICOM Segmentation).

    Args:
        out_dir: ``OUT/<item>``.
        grid: the item's voxel grid (the series': ``(columns, rows, slices)``).
        series_path: the series item's path (``<folder>#series=<uid>``): its files are the
            source instances.
        legend: class names and colours (and DICOM codes), index = label value.
        nodata_label: a label that is no class (never a segment).
        provenance: ``model`` (name), ``model_version`` (its hash) and ``software`` (geoseg's
            version) for the algorithm identification.

    Raises:
        SinkError: the item is not a DICOM series, or the staging file cannot be created.
    """

    name = "dicom-seg"

    def __init__(self, out_dir: Path, grid: VolumeGrid, series_path: str | None, legend: ClassLegend,
                 nodata_label: int | None, provenance: dict[str, str] | None = None, dicomweb: Any = None) -> None:
        from ..formats import SERIES_MARK

        if not isinstance(series_path, str) or SERIES_MARK not in series_path:
            raise SinkError(f"{out_dir}: output.formats lists dicom-seg, which needs a DICOM series input "
                            "(inputs.format: dicom); this item is not one")
        self.max_label, self.dtype = label_type(out_dir, legend, nodata_label)
        super().__init__(out_dir)
        self.grid, self.series_path, self.legend = grid, series_path, legend
        self.nodata_label = nodata_label
        self.provenance = dict(provenance or {})
        self.dicomweb = dicomweb
        self._staged = self.staging / "labels.raw"
        try:
            with open(self._staged, "wb") as f:
                f.truncate(grid.voxel_count * self.dtype.itemsize)  # sparse: reads as zeros
        except OSError as exc:
            self.abort()
            raise SinkError(f"{out_dir}: cannot create the staged label volume: {exc}") from exc

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> DicomSegSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`)."""
        assert isinstance(target.grid, VolumeGrid)
        return cls(out_dir, target.grid, target.source_series, target.legend, target.nodata_label, target.provenance,
                   target.dicomweb)

    def _map(self) -> np.memmap:
        return np.memmap(self._staged, dtype=self.dtype, mode="r+", shape=self.grid.shape, order="F")

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        check_block(self.out_dir, self.grid.shape, window, labels, self.max_label)
        self._map()[window.slices()] = labels

    def _prepare(self) -> list[tuple[Path, Path]]:
        seg = build_segmentation(self.series_path, self._map(), self.legend, self.nodata_label, self.provenance,
                                 self.dicomweb)
        target = self.staging / SEG_NAME
        seg.save_as(target, enforce_file_format=True)
        self._staged.unlink()
        return [(target, self.out_dir / SEG_NAME)]


def _code(value: Any, default: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    scheme, code, meaning = (value.scheme, value.value, value.meaning) if value is not None else default
    return CodedConcept(value=code, scheme_designator=scheme, meaning=meaning)


def _sources(series_path: str, dicomweb: Any = None) -> tuple[list[Any], list[int]]:
    """The source datasets (headers) in the order highdicom wants them, and for each of its
    frames the slice index ``k`` of the volume.

    Single-frame series: one dataset per slice, in slice order. An enhanced object: the one
    dataset, its frames in file order. A DICOMweb series: the headers of its WADO-RS metadata.
    """
    import pydicom

    from ..sources.dicom_series import find_series

    series = find_series(series_path, dicomweb)
    if series_path.startswith("dicomweb+"):
        from ..sources.dicomweb import series_headers

        headers = dict(series_headers(series_path, dicomweb))
        return [headers[ref.path] for ref in series.slices], list(range(len(series.slices)))
    if series.slices[0].frame is not None:
        ds = pydicom.dcmread(series.slices[0].path, stop_before_pixels=True)
        by_frame = {ref.frame: k for k, ref in enumerate(series.slices)}
        return [ds], [by_frame[f] for f in range(len(series.slices))]
    datasets = [pydicom.dcmread(ref.path, stop_before_pixels=True) for ref in series.slices]
    return datasets, list(range(len(series.slices)))


def build_segmentation(series_path: str, labels: np.ndarray, legend: ClassLegend, nodata_label: int | None,
                       provenance: dict[str, str], dicomweb: Any = None) -> Any:
    """A highdicom ``Segmentation`` of ``labels`` (``(i, j, k)`` on the series grid) over the
    series' instances.

    Raises:
        SinkError: the source series cannot be read, or highdicom refuses the segmentation.
    """
    try:
        import highdicom as hd
    except ImportError as exc:
        raise SinkError("writing DICOM SEG needs highdicom: pip install 'geoseg-pipeline[dicom]'") from exc
    from pydicom.sr.codedict import codes

    sources, frames = _sources(series_path, dicomweb)
    for ds in sources:
        for name in _TYPE2:
            if name not in ds:
                setattr(ds, name, "")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=provenance.get("model", "model")[:64], family=codes.DCM.ArtificialIntelligence,
        version=provenance.get("model_version", "unknown")[:64],
    )
    dicom_codes = legend.codes or (None,) * len(legend.names)
    descriptions = []
    for k, name in enumerate(legend.names):
        if k == 0 or k == nodata_label:
            continue
        code = dicom_codes[k]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=k, segment_label=name[:64],
            segmented_property_category=_code(code.category if code else None, TISSUE),
            segmented_property_type=_code(code.type if code else None, TISSUE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        ))
    # (frames, rows, columns): frame f is slice frames[f]; rows run along j, columns along i
    planes = np.transpose(labels, (2, 1, 0))
    if frames != list(range(len(frames))):
        planes = planes[frames]
    if nodata_label is not None and nodata_label >= len(legend.names):
        planes = np.where(planes == nodata_label, 0, planes)
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=planes, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="geoseg-pipeline",
            manufacturer_model_name=provenance.get("model", "model")[:64],
            software_versions=provenance.get("software", "unknown"), device_serial_number="none",
            series_description=f"geoseg {provenance.get('model', '')}"[:64], content_label="GEOSEG",
            content_description="automatic segmentation by geoseg-pipeline",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SinkError(f"{series_path}: highdicom refused the segmentation: {exc}") from exc


__all__ = ["SEG_NAME", "DicomSegSink", "build_segmentation"]
