"""``labels.dcm``, a DICOM Segmentation over the source series: checked by dciodvfy (David
Clunie's dicom3tools), read back by an independent decoder (pydicom and numpy, not highdicom)
frame by frame onto the source slices, with the source's patient, study and frame of reference,
the workflow's segment names and codes, and the algorithm named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_files import OBLIQUE, dciodvfy, read_seg, write_enhanced, write_series

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sinks import ClassLegend
from geoseg_pipeline.sinks.dicom_seg import DicomSegSink
from geoseg_pipeline.sources.dicom_series import find_series, scan_folder
from geoseg_pipeline.spec.classes import DicomClassCodes, DicomCode
from geoseg_pipeline.volumes import VolumeGrid

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")

SHAPE = (40, 36, 11)
LIVER = DicomClassCodes(category=DicomCode(scheme="SCT", value="123037004", meaning="Anatomical Structure"),
                        type=DicomCode(scheme="SCT", value="10200004", meaning="Liver"))
LEGEND = ClassLegend(("background", "liver", "lesion", "never seen"), ("#000000", "#aa3333", "#ffff00", "#00ff00"),
                     codes=(None, LIVER, None, None))
PROVENANCE = {"model": "liver-net.pt", "model_version": "0123456789abcdef", "software": "geoseg 0.1.0"}


def _labels() -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[((i - 20) / 12) ** 2 + ((j - 18) / 10) ** 2 + ((k - 5) / 4) ** 2 < 1] = 1
    labels[((i - 24) / 4) ** 2 + ((j - 15) / 3) ** 2 + ((k - 6) / 2) ** 2 < 1] = 2
    return labels


def _write(sink: DicomSegSink, labels: np.ndarray, block: int = 16) -> Path:
    for i in range(0, SHAPE[0], block):
        for j in range(0, SHAPE[1], block):
            for k in range(0, SHAPE[2], block):
                window = Window((i, j, k), tuple(min(block, n - a) for a, n in zip((i, j, k), SHAPE, strict=True)))
                sink.write(window, labels[window.slices()])
    return sink.commit()


def test_the_seg_overlays_its_series_and_passes_dciodvfy(tmp_path: Path) -> None:
    stored = np.random.default_rng(0).integers(0, 2000, SHAPE).astype(np.int16)
    paths = write_series(tmp_path / "ct", stored, OBLIQUE)
    series = scan_folder(str(tmp_path / "ct")).series[0]
    grid = VolumeGrid(series.shape, series.affine_array, 1, 1)
    labels = _labels()
    main = _write(DicomSegSink(tmp_path / "out", grid, series.path, LEGEND, None, PROVENANCE), labels)
    assert main == tmp_path / "out" / "labels.dcm" and sorted(p.name for p in main.parent.iterdir()) == ["labels.dcm"]
    assert dciodvfy(main) == []
    back, seg = read_seg(main, paths)
    np.testing.assert_array_equal(back, labels)
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for name in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "AccessionNumber"):
        assert seg[name].value == source[name].value, name
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(segments) == [1, 2, 3]
    assert [segments[n].SegmentLabel for n in (1, 2, 3)] == ["liver", "lesion", "never seen"]
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    algorithm = segments[1].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("liver-net.pt", "0123456789abcdef")
    # a second run: another series
    again = _write(DicomSegSink(tmp_path / "out2", grid, series.path, LEGEND, None, PROVENANCE), labels)
    assert pydicom.dcmread(again).SeriesInstanceUID != seg.SeriesInstanceUID


def test_over_an_enhanced_object_frames_follow_its_frames(tmp_path: Path) -> None:
    stored = np.random.default_rng(1).integers(0, 2000, SHAPE).astype(np.int16)
    (tmp_path / "enh").mkdir()
    source = write_enhanced(tmp_path / "enh" / "ct.dcm", stored, OBLIQUE)
    series = scan_folder(str(tmp_path / "enh")).series[0]
    grid = VolumeGrid(series.shape, series.affine_array, 1, 1)
    labels = _labels()
    main = _write(DicomSegSink(tmp_path / "out", grid, series.path, LEGEND, None, PROVENANCE), labels)
    assert dciodvfy(main) == []
    seg = pydicom.dcmread(main)
    frames = pydicom.dcmread(source, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    positions = [float(np.dot(f.PlanePositionSequence[0].ImagePositionPatient, [0, 0, 1])) for f in frames]
    ordered = find_series(series.path).slices
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")
    planes = bits[: int(seg.NumberOfFrames) * SHAPE[0] * SHAPE[1]].reshape(-1, SHAPE[1], SHAPE[0])
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source_frame = int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber) - 1
        k = next(n for n, ref in enumerate(ordered) if ref.frame == source_frame)
        z = float(np.dot(item.PlanePositionSequence[0].ImagePositionPatient, [0, 0, 1]))
        assert z == pytest.approx(positions[source_frame], abs=1e-4)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(planes[f].T.astype(bool), labels[:, :, k] == number)


def test_an_item_that_is_not_a_dicom_series_is_refused(tmp_path: Path) -> None:
    grid = VolumeGrid(SHAPE, np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(SinkError, match="dicom-seg, which needs a DICOM series input"):
        DicomSegSink(tmp_path / "out", grid, str(tmp_path / "ct.nii.gz"), LEGEND, None, PROVENANCE)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_streamed_frames_equal_highdicoms_own(tmp_path: Path) -> None:
    """The SEG is written frame by frame from a small highdicom template; highdicom given the
    whole label array must produce the same frames: pixel data, frame order and per-frame groups."""
    import highdicom as hd

    from geoseg_pipeline.sinks.dicom_seg import _descriptions, _sources

    write_series(tmp_path / "ct", np.zeros(SHAPE, np.int16), OBLIQUE)
    series = scan_folder(str(tmp_path / "ct")).series[0]
    grid = VolumeGrid(series.shape, series.affine_array, 1, 1)
    labels = _labels()
    ours = pydicom.dcmread(_write(DicomSegSink(tmp_path / "out", grid, series.path, LEGEND, None, PROVENANCE),
                                  labels))
    sources, _ = _sources(series.path)
    theirs = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.transpose(labels, (2, 1, 0)), segmentation_type="BINARY",
        segment_descriptions=_descriptions(LEGEND, None, PROVENANCE), series_instance_uid=hd.UID(),
        series_number=9001, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="geoseg-pipeline",
        manufacturer_model_name="m", software_versions="s", device_serial_number="none")
    assert int(ours.NumberOfFrames) == int(theirs.NumberOfFrames) > 0
    assert bytes(ours.PixelData).rstrip(b"\0") == bytes(theirs.PixelData).rstrip(b"\0")
    for a, b in zip(ours.PerFrameFunctionalGroupsSequence, theirs.PerFrameFunctionalGroupsSequence, strict=True):
        index = a.FrameContentSequence[0].DimensionIndexValues, b.FrameContentSequence[0].DimensionIndexValues
        assert list(index[0]) == list(index[1])
        assert a.SegmentIdentificationSequence[0].ReferencedSegmentNumber == \
            b.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert a.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == \
            b.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert list(a.PlanePositionSequence[0].ImagePositionPatient) == \
            list(b.PlanePositionSequence[0].ImagePositionPatient)


def test_an_all_background_series_gives_one_empty_frame(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "ct", np.zeros(SHAPE, np.int16), OBLIQUE)
    series = scan_folder(str(tmp_path / "ct")).series[0]
    grid = VolumeGrid(series.shape, series.affine_array, 1, 1)
    sink = DicomSegSink(tmp_path / "out", grid, series.path, LEGEND, None, PROVENANCE)
    main = _write(sink, np.zeros(SHAPE, np.uint8))
    assert dciodvfy(main) == []
    back, seg = read_seg(main, paths)
    assert int(seg.NumberOfFrames) == 1 and not back.any() and len(seg.SegmentSequence) == 3
