"""Train the bundled CT liver-tumour demo model and measure it on phantoms it never saw.

Generates 30 training phantoms with :func:`geoseg_pipeline.demo.phantoms.write_ct_phantom`
(seeds ``0 .. n-1``, cycling through a range of voxel spacings, see :data:`TRAIN_GRIDS`) in a
temporary folder and trains :class:`CtDemoNet` on random ``64 x 64 x 32`` crops on the CPU
with cross-entropy plus soft Dice. Thirty phantoms rather than a dozen because only about 40 %
of phantoms hold an exophytic tumour: with few phantoms the net sees too few tumour parts
outside the liver and too few livers to tell their texture from tumour. Crops are
class-balanced: 45 % are centred on a tumour (exophytic ones twice as often), 20 % on liver,
15 % on tumour look-alikes (hypodense background near the liver) and 20 % anywhere. Eight
further phantoms on several grids then calibrate the tumour logit so that whole-volume tumour
volumes are unbiased (:func:`calibrate_tumour_volume`), and the ``state_dict`` is saved to
``WEIGHTS_PATH``. Finally six unseen phantoms on three grids (:data:`EVAL_GRIDS`) are
segmented whole with MONAI's ``sliding_window_inference`` (roi ``64 x 64 x 32``, overlap 0.25,
gaussian blend), and the per-class Dice and the predicted against the true tumour volume (mL)
are printed and written as JSON.

Run from the repository root (the package need not be installed)::

    python -m scripts.train_ct_demo --metrics-out docs/ct_demo_metrics.json

The run is deterministic for a given torch build and thread count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference
from scipy import ndimage
from torch.nn import functional

from geoseg_pipeline.demo.phantoms import CT_CLASS_NAMES, PhantomTruth, write_ct_phantom
from geoseg_pipeline.models.ct_demo import NUM_CLASSES, WEIGHTS_PATH, CtDemoNet

CROP = (64, 64, 32)
"""Training crop and inference window (roi) in voxels."""

TRAIN_GRIDS: tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...] = (
    ((160, 160, 64), (0.8, 0.8, 2.5)),
    ((144, 144, 80), (0.9, 0.9, 2.0)),
    ((128, 128, 54), (1.0, 1.0, 3.0)),
    ((112, 112, 40), (1.2, 1.2, 4.0)),
    ((160, 160, 64), (0.8, 0.8, 2.5)),
    ((96, 96, 40), (1.35, 1.35, 4.0)),
    ((176, 176, 32), (0.7, 0.7, 5.0)),
    ((120, 120, 64), (1.1, 1.1, 2.5)),
    ((150, 150, 60), (0.85, 0.85, 2.5)),
    ((136, 136, 48), (0.95, 0.95, 3.0)),
    ((104, 104, 36), (1.25, 1.25, 4.5)),
    ((160, 160, 64), (0.8, 0.8, 2.5)),
)
"""``(shape, spacing)`` of the training phantoms (seed ``k`` gets grid ``k % 12``): fields of view
of 120 to 176 mm, thin to thick slices."""

EVAL_GRIDS: tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...] = (
    ((160, 160, 64), (0.8, 0.8, 2.5)),
    ((128, 128, 54), (1.0, 1.0, 3.0)),
    ((100, 100, 40), (1.3, 1.3, 4.0)),
)
"""``(shape, spacing)`` of the evaluation phantoms (cycled): the default grid, a middle and a
coarse one (the coarse spacing is not among :data:`TRAIN_GRIDS`)."""

Volume = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], PhantomTruth]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults produce the bundled weights."""

    train_phantoms: int = 30
    calibration_seeds: tuple[int, ...] = tuple(range(500, 508))
    eval_seeds: tuple[int, ...] = tuple(range(1000, 1006))
    steps: int = 1200
    batch: int = 4
    learning_rate: float = 4e-3
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.train_phantoms < 1:
            raise ValueError(f"train_phantoms must be >= 1, got {self.train_phantoms}")
        if min(self.eval_seeds + self.calibration_seeds, default=0) < self.train_phantoms:
            raise ValueError(
                f"calibration and evaluation seeds must not be training seeds (0..{self.train_phantoms - 1}), "
                f"got {self.calibration_seeds} and {self.eval_seeds}"
            )
        if set(self.eval_seeds) & set(self.calibration_seeds):
            raise ValueError(f"eval_seeds must not be calibration seeds, got {self.eval_seeds}")
        if min(self.steps, self.batch, self.threads) < 1:
            raise ValueError(f"steps, batch and threads must be >= 1, got {self}")


@dataclass(frozen=True)
class PhantomMetrics:
    """Evaluation of the trained model on one unseen phantom."""

    seed: int
    spacing: list[float]
    dice: dict[str, float]
    true_tumour_ml: float
    predicted_tumour_ml: float
    tumour_volume_error: float
    tumour_count: int


@dataclass(frozen=True)
class Metrics:
    """Evaluation on the unseen phantoms, with the training settings and time."""

    phantoms: list[PhantomMetrics]
    dice: dict[str, float]
    max_abs_tumour_volume_error: float
    tumour_logit_offset: float
    sliding_window: dict[str, object]
    train_seconds: float
    train_config: dict[str, object]
    torch_version: str


def main(argv: Sequence[str] | None = None) -> int:
    """Train, save the weights, evaluate and write the metrics; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--metrics-out", type=Path, default=Path("docs/ct_demo_metrics.json"))
    parser.add_argument("--weights-out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    args = parser.parse_args(argv)
    config = TrainConfig(steps=args.steps)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)

    with tempfile.TemporaryDirectory(prefix="ct-demo-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        phantoms = [
            _make_phantom(folder, seed, *TRAIN_GRIDS[seed % len(TRAIN_GRIDS)]) for seed in range(config.train_phantoms)
        ]
        net = train(phantoms, config)
        del phantoms
        # Calibrate on phantoms of several grids, none of them seen in training or evaluation.
        calibration = [
            _make_phantom(folder, seed, *TRAIN_GRIDS[k % len(TRAIN_GRIDS)])
            for k, seed in enumerate(config.calibration_seeds)
        ]
        offset = calibrate_tumour_volume(net, calibration)
        del calibration
        train_seconds = time.perf_counter() - started
        args.weights_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), args.weights_out)
        grids = [EVAL_GRIDS[k % len(EVAL_GRIDS)] for k in range(len(config.eval_seeds))]
        unseen = [(seed, _make_phantom(folder, seed, *g)) for seed, g in zip(config.eval_seeds, grids, strict=True)]

    metrics = evaluate(net, unseen, config, train_seconds, offset)
    for phantom in metrics.phantoms:
        dice = "  ".join(f"{name} {value:.4f}" for name, value in phantom.dice.items())
        print(
            f"seed {phantom.seed}: Dice {dice}; tumour {phantom.predicted_tumour_ml:.2f} mL "
            f"vs {phantom.true_tumour_ml:.2f} mL true ({100 * phantom.tumour_volume_error:+.1f} %)"
        )
    print(f"tumour logit offset {offset:+.3f}")
    print(f"trained {config.steps} steps in {train_seconds:.1f} s (with phantoms, calibration); -> {args.weights_out}")
    args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
    args.metrics_out.write_text(json.dumps(asdict(metrics), indent=2) + "\n")
    return 0


def train(phantoms: list[Volume], config: TrainConfig) -> CtDemoNet:
    """Train a fresh net on class-balanced random crops of ``phantoms`` (images, labels, truth)."""
    rng = np.random.default_rng(config.seed)
    net = CtDemoNet()
    # Channels-last 3D halves the time of a step with the oneDNN CPU convolutions.
    net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=config.steps)
    centres = [_CropCentres.of(image, labels) for image, labels, _ in phantoms]
    net.train()
    for step in range(config.steps):
        images, labels = _batch(phantoms, centres, config.batch, rng)
        logits = net(images.contiguous(memory_format=torch.channels_last_3d))
        loss = functional.cross_entropy(logits, labels) + soft_dice_loss(logits, labels)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return net.eval()


def calibrate_tumour_volume(net: CtDemoNet, phantoms: list[Volume]) -> float:
    """Shift the tumour logit (the head's bias) so tumour volumes on ``phantoms`` come out unbiased.

    A net that is unsure at tumour borders labels them consistently as liver or background,
    which biases every tumour volume the same way. With ``d`` the margin of the tumour logit over
    the largest other logit, the argmax labels a voxel tumour where ``d > 0``. For each phantom,
    the offset ``b`` makes ``d + b > 0`` hold for as many voxels of the whole volume as are truly
    tumour, so that it balances what the volume report counts: border errors and false-positive
    voxels away from the tumours alike. The median over the phantoms (of several grids) is
    applied, so that one phantom with a missed tumour part does not move the borders of all.
    Liver against background decisions are unchanged.

    Returns:
        The offset added to the tumour bias of :attr:`CtDemoNet.head`.
    """
    offsets = []
    for image, labels, _ in phantoms:
        logits = sliding_logits(net, image)
        true_voxels = int((labels == 2).sum())
        margins = (logits[2] - np.maximum(logits[0], logits[1])).ravel()
        ranked = -np.sort(-np.partition(margins, margins.size - true_voxels - 1)[-true_voxels - 1 :])
        offsets.append(-0.5 * float(ranked[true_voxels - 1] + ranked[true_voxels]))
    offset = round(float(np.median(offsets)), 4)
    bias = net.head.bias
    if bias is None:
        raise TypeError("CtDemoNet.head must have a bias to calibrate")
    with torch.no_grad():
        bias[2] += offset
    return offset


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 -`` the mean soft Dice of the foreground classes over the whole batch."""
    probabilities = logits.softmax(dim=1)[:, 1:]
    one_hot = functional.one_hot(labels, NUM_CLASSES).permute(0, 4, 1, 2, 3)[:, 1:].to(probabilities.dtype)
    dims = (0, 2, 3, 4)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * intersection + 1.0) / (total + 1.0)).mean()


def evaluate(
    net: CtDemoNet, unseen: list[tuple[int, Volume]], config: TrainConfig, train_seconds: float, offset: float
) -> Metrics:
    """Segment each unseen phantom whole with a sliding window and score it."""
    results = []
    pooled = np.zeros((NUM_CLASSES, 2), dtype=np.int64)  # per class: intersection, predicted + reference
    for seed, (image, labels, truth) in unseen:
        predicted = predict_volume(net, image)
        counts = dice_counts(predicted, labels, NUM_CLASSES)
        pooled += counts
        predicted_ml = int((predicted == 2).sum()) * truth.voxel_volume_ml
        results.append(
            PhantomMetrics(
                seed=seed,
                spacing=[round(abs(float(v)), 3) for v in np.diag(np.asarray(truth.affine)[:3, :3])],
                dice=_dice_by_name(counts),
                true_tumour_ml=round(truth.total_tumour_volume_ml, 3),
                predicted_tumour_ml=round(predicted_ml, 3),
                tumour_volume_error=round(predicted_ml / truth.total_tumour_volume_ml - 1.0, 4),
                tumour_count=truth.tumour_count,
            )
        )
    return Metrics(
        phantoms=results,
        dice=_dice_by_name(pooled),
        max_abs_tumour_volume_error=max(abs(r.tumour_volume_error) for r in results),
        tumour_logit_offset=offset,
        sliding_window={"roi_size": list(CROP), "overlap": 0.25, "mode": "gaussian"},
        train_seconds=round(train_seconds, 1),
        train_config={key: value for key, value in asdict(config).items()},
        torch_version=torch.__version__,
    )


def sliding_logits(net: CtDemoNet, image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Logits ``(classes, X, Y, Z)`` of a whole volume (HU) by gaussian-blended sliding windows."""
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None, None], CROP, 4, net, overlap=0.25, mode="gaussian"
        )
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the net must return one tensor, got {type(logits)}")
    result: npt.NDArray[np.float32] = logits[0].numpy()
    return result


def predict_volume(net: CtDemoNet, image: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Label map of a whole volume (HU, ``(X, Y, Z)``) by gaussian-blended sliding windows."""
    labels: npt.NDArray[np.int64] = sliding_logits(net, image).argmax(axis=0)
    return labels


def dice_counts(
    predicted: npt.NDArray[np.int64], reference: npt.NDArray[np.int64], num_classes: int
) -> npt.NDArray[np.int64]:
    """Per class, ``(intersection, predicted + reference voxels)``; Dice is ``2 * first / second``."""
    counts = np.zeros((num_classes, 2), dtype=np.int64)
    for klass in range(num_classes):
        is_predicted, is_reference = predicted == klass, reference == klass
        counts[klass] = (int((is_predicted & is_reference).sum()), int(is_predicted.sum() + is_reference.sum()))
    return counts


def _dice_by_name(counts: npt.NDArray[np.int64]) -> dict[str, float]:
    return {
        name: round(float(2 * both / total), 4) if total else float("nan")
        for name, (both, total) in zip(CT_CLASS_NAMES, counts, strict=True)
    }


def _make_phantom(folder: Path, seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    image_path, labels_path = folder / f"ct-{seed}.nii.gz", folder / f"labels-{seed}.nii.gz"
    truth = write_ct_phantom(image_path, seed, shape=shape, spacing=spacing, labels_path=labels_path)
    return _read(image_path).astype(np.float32), _read(labels_path).astype(np.int64), truth


def _read(path: Path) -> npt.NDArray[np.generic]:
    """The stored voxel array of a NIfTI file (unscaled: the phantoms have ``scl_slope`` 1)."""
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise TypeError(f"expected a NIfTI-1 image, got {type(image).__name__} for {path}")
    return np.asarray(image.dataobj)


@dataclass(frozen=True)
class _CropCentres:
    """Flat voxel indices of one phantom to centre training crops on."""

    tumours: list[npt.NDArray[np.intp]]
    """One array per tumour; exophytic tumours (more than a tenth of their rim background) twice."""
    liver: npt.NDArray[np.intp]
    confusers: npt.NDArray[np.intp]
    """Hypodense background near the liver (gallbladder, fat borders): look-alikes of tumour."""

    @classmethod
    def of(cls, image: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> _CropCentres:
        components, count = ndimage.label(labels == 2)
        order = np.argsort(components, axis=None, kind="stable")
        bounds = np.searchsorted(components.ravel()[order], np.arange(1, count + 2))
        tumours = []
        for k in range(count):
            tumour = components == k + 1
            rim = ndimage.binary_dilation(tumour) & ~tumour
            tumours.extend([order[bounds[k] : bounds[k + 1]]] * (2 if (labels[rim] == 0).mean() > 0.1 else 1))
        near_liver = ndimage.distance_transform_edt(labels == 0) <= 10
        smoothed = ndimage.gaussian_filter(image, 1.5)
        confusers = (labels == 0) & near_liver & (smoothed > -30) & (smoothed < 28)
        return cls(tumours, np.flatnonzero(labels == 1), np.flatnonzero(confusers))

    def draw(self, rng: np.random.Generator) -> npt.NDArray[np.intp] | None:
        """A pool to centre on: a tumour (45 %), liver (20 %), confusers (15 %) or ``None`` (anywhere)."""
        draw = rng.random()
        if draw < 0.45 and self.tumours:
            return self.tumours[int(rng.integers(len(self.tumours)))]
        if draw < 0.65:
            return self.liver
        return self.confusers if draw < 0.8 else None


def _batch(
    phantoms: list[Volume], centres: list[_CropCentres], size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, centred (+- a quarter crop) on a voxel drawn by :meth:`_CropCentres.draw`."""
    images: list[npt.NDArray[np.float32]] = []
    labels: list[npt.NDArray[np.int64]] = []
    for _ in range(size):
        index = int(rng.integers(len(phantoms)))
        image, label, _ = phantoms[index]
        pool = centres[index].draw(rng)
        if pool is not None and len(pool):
            centre = np.array(np.unravel_index(int(pool[rng.integers(len(pool))]), label.shape))
        else:
            centre = np.array([rng.integers(n) for n in label.shape])
        jitter = np.array([rng.integers(-c // 4, c // 4 + 1) for c in CROP])
        start = np.clip(centre + jitter - np.array(CROP) // 2, 0, np.array(label.shape) - np.array(CROP))
        region = tuple(slice(int(s), int(s) + c) for s, c in zip(start, CROP, strict=True))
        gain, offset = rng.uniform(0.97, 1.03), rng.uniform(-3.0, 3.0)
        images.append((image[region] * np.float32(gain) + np.float32(offset))[None])
        labels.append(label[region])
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


if __name__ == "__main__":
    raise SystemExit(main())
