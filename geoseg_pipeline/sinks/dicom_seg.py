"""DICOM Segmentation output (``output.formats: [..., dicom-seg]``): ``labels.dcm`` over the
source series, for DICOM series inputs.

Written with highdicom (a template for the header, the frames streamed: see
:func:`write_segmentation`): a BINARY Segmentation with one segment per non-background class (the
workflow's class names; coded category and type from the workflow's ``classes[].dicom``, else
SNOMED CT "Tissue"), frames only where a segment is present, each frame referencing its source
instance (``DerivationImageSequence``) and lying exactly on that slice's plane (the source's
``ImagePositionPatient``/``ImageOrientationPatient``, same frame of reference), so that viewers
(3D Slicer, OHIF) overlay it on the series. Patient and study attributes come from the source; a
new series and instance UID per run; the algorithm is identified by the model's name and hash.

Like the NIfTI sink, labels are written block by block into a memory-mapped staging file; the
SEG is written at commit from that map, slice by slice.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

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
        target = self.staging / SEG_NAME
        write_segmentation(self.series_path, self._map(), self.legend, self.nodata_label, self.provenance, target,
                           self.dicomweb)
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
    from ..sources.dicomweb import is_dicomweb, series_headers

    series = find_series(series_path, dicomweb)
    if is_dicomweb(series_path):

        headers = dict(series_headers(series_path, dicomweb))
        return [headers[ref.path] for ref in series.slices], list(range(len(series.slices)))
    if series.slices[0].frame is not None:
        ds = pydicom.dcmread(series.slices[0].path, stop_before_pixels=True)
        by_frame = {ref.frame: k for k, ref in enumerate(series.slices)}
        return [ds], [by_frame[f] for f in range(len(series.slices))]
    datasets = [pydicom.dcmread(ref.path, stop_before_pixels=True) for ref in series.slices]
    return datasets, list(range(len(series.slices)))


def write_segmentation(series_path: str, labels: np.ndarray, legend: ClassLegend, nodata_label: int | None,
                       provenance: dict[str, str], target: Path, dicomweb: Any = None) -> None:
    """Write a BINARY DICOM Segmentation of ``labels`` (``(i, j, k)`` on the series grid) over the
    series' instances to ``target``, frame by frame.

    highdicom encodes every frame in memory and then joins them, which for a large series with
    many classes (500 slices, 20 classes: 330 MB of frames) costs several times the output. So
    highdicom builds only a small template (the first class on every slice, the others on one
    slice, one pixel each): every header attribute, each slice's per-frame functional groups (its
    source reference and plane position). The real frames are then listed from that template (a
    copy of the slice's groups with the class and the position index set) and their bits are
    streamed into a file that becomes the pixel data: memory is one slice at a time plus the
    per-frame headers. Frames are ordered as highdicom orders them (by class, then in its order of
    positions) and frames where a class is absent are omitted, so that the file equals what
    highdicom writes from the whole array (``tests/sinks/test_dicom_seg.py`` compares them).

    Raises:
        SinkError: the source series cannot be read, or highdicom refuses the template.
    """
    try:
        import highdicom as hd
    except ImportError as exc:
        raise SinkError("writing DICOM SEG needs highdicom: pip install 'geoseg-pipeline[dicom]'") from exc

    sources, order = _sources(series_path, dicomweb)
    for ds in sources:
        for name in _TYPE2:
            if name not in ds:
                setattr(ds, name, "")
    descriptions = _descriptions(legend, nodata_label, provenance)
    numbers = [d.SegmentNumber for d in descriptions]
    # source frame f (highdicom's order) is slice order[f]; rows run along j, columns along i
    planes = np.transpose(labels, (2, 1, 0))
    count, rows, cols = len(order), planes.shape[1], planes.shape[2]
    if len(numbers) > rows * cols:  # (one pixel each in the template)
        raise SinkError(f"{series_path}: {len(numbers)} classes do not fit a {rows} x {cols} template frame")
    present: dict[int, list[int]] = {n: [] for n in numbers}
    for f in range(count):
        for value in np.unique(np.asarray(planes[order[f]])):
            if int(value) in present:
                present[int(value)].append(f)
    template = np.zeros((count, rows, cols), np.uint8 if max(numbers) < 256 else np.uint16)
    template[:, 0, 0] = 1
    for n in range(2, len(numbers) + 1):
        template[0, (n - 1) // cols, (n - 1) % cols] = n
    # highdicom numbers the described segments 1..n: the template's, renumbered below
    local = [_renumbered(d, i + 1) for i, d in enumerate(descriptions)]
    try:
        seg: Any = hd.seg.Segmentation(
            source_images=sources, pixel_array=template, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=local, series_instance_uid=hd.UID(), series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="geoseg-pipeline",
            manufacturer_model_name=provenance.get("model", "model")[:64],
            software_versions=provenance.get("software", "unknown"), device_serial_number="none",
            series_description=f"geoseg {provenance.get('model', '')}"[:64], content_label="GEOSEG",
            content_description="automatic segmentation by geoseg-pipeline",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SinkError(f"{series_path}: highdicom refused the segmentation: {exc}") from exc
    for item, d in zip(seg.SegmentSequence, descriptions, strict=True):
        item.SegmentNumber = d.SegmentNumber
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:  # one class: highdicom shares it; it is per frame here
        del shared.SegmentIdentificationSequence
    by_slice = _slice_groups(seg, sources, count)
    # highdicom's position order (its dimension index over every slice in the template), kept
    order_of = {f: int(item.FrameContentSequence[0].DimensionIndexValues[1]) for f, item in by_slice.items()}
    used = sorted({f for fs in present.values() for f in fs}, key=order_of.__getitem__)
    frames = [(n, f) for n in numbers for f in sorted(present[n], key=order_of.__getitem__)]
    if not frames:  # all background: one empty frame (a SEG has one at least)
        frames, used = [(numbers[0], used[0] if used else 0)], [0]
    rank = {f: r + 1 for r, f in enumerate(used)}
    items = []
    for n, f in frames:
        item = copy.deepcopy(by_slice[f])
        item.FrameContentSequence[0].DimensionIndexValues = [n, rank[f]]
        ident = Dataset()
        ident.ReferencedSegmentNumber = n
        item.SegmentIdentificationSequence = DicomSequence([ident])
        items.append(item)
    seg.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    seg.NumberOfFrames = len(items)
    bits = target.with_name(f".{target.name}.bits")
    try:
        with open(bits, "wb") as out:
            packer = _BitPacker(out)
            for n, f in frames:
                packer.add(np.asarray(planes[order[f]]) == n)
            packer.close()
        with open(bits, "rb") as data:
            seg.PixelData = data
            seg.save_as(target, enforce_file_format=True)
    finally:
        bits.unlink(missing_ok=True)


def _renumbered(description: Any, number: int) -> Any:
    out = copy.deepcopy(description)
    out.SegmentNumber = number
    return out


def _descriptions(legend: ClassLegend, nodata_label: int | None, provenance: dict[str, str]) -> list[Any]:
    """One segment description per non-background class (not the nodata label), numbered as the labels."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=provenance.get("model", "model")[:64], family=codes.DCM.ArtificialIntelligence,
        version=provenance.get("model_version", "unknown")[:64],
    )
    dicom_codes = legend.codes or (None,) * len(legend.names)
    out = []
    for k, name in enumerate(legend.names):
        if k == 0 or k == nodata_label:
            continue
        code = dicom_codes[k]
        out.append(hd.seg.SegmentDescription(
            segment_number=k, segment_label=name[:64],
            segmented_property_category=_code(code.category if code else None, TISSUE),
            segmented_property_type=_code(code.type if code else None, TISSUE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        ))
    return out


def _slice_groups(seg: Any, sources: list[Any], count: int) -> dict[int, Any]:
    """The template's per-frame groups of its first segment, by source frame (0-based, in
    highdicom's source order): one per slice."""
    uids = {str(ds.SOPInstanceUID): i for i, ds in enumerate(sources)}
    out: dict[int, Any] = {}
    for item in seg.PerFrameFunctionalGroupsSequence[:count]:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        f = uids[str(ref.ReferencedSOPInstanceUID)]
        if "ReferencedFrameNumber" in ref:  # an enhanced source: its frames
            f = int(ref.ReferencedFrameNumber) - 1
        out[f] = item
    if len(out) != count:
        raise SinkError(f"the SEG template has {len(out)} slices, the series {count}")
    return out


class _BitPacker:
    """Binary frames packed bit by bit, little-endian within each byte, one frame after the other
    with no padding between frames (as DICOM packs BINARY segmentations), into a file; the total
    is padded to an even number of bytes."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.carry = np.zeros(0, bool)
        self.written = 0

    def add(self, mask: np.ndarray) -> None:
        bits = np.concatenate([self.carry, mask.ravel()]) if self.carry.size else mask.ravel()
        whole = bits.size - bits.size % 8
        self.out.write(np.packbits(bits[:whole], bitorder="little").tobytes())
        self.written += whole // 8
        self.carry = bits[whole:].copy()

    def close(self) -> None:
        if self.carry.size:
            self.out.write(np.packbits(self.carry, bitorder="little").tobytes())
            self.written += 1
        if self.written % 2:
            self.out.write(b"\0")


__all__ = ["SEG_NAME", "DicomSegSink", "write_segmentation"]
