"""Train the bundled land-cover demo model and measure it on a scene it never saw.

Generates training scenes with :func:`geoseg_pipeline.demo.scenes.write_landcover_scene`
(seeds ``0 .. n-1``) in a temporary folder, trains :class:`LandcoverDemoNet` on random
``128 x 128`` crops on the CPU with cross-entropy that ignores nodata (label ``255``), saves
the ``state_dict`` to ``WEIGHTS_PATH``, then predicts a whole unseen scene (seed ``1000``) and
reports per-class IoU and mIoU over its valid pixels, printed and written as JSON.

Run from the repository root (the package need not be installed)::

    python -m scripts.train_landcover_demo --metrics-out docs/landcover_demo_metrics.json

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

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from torch.nn import functional

from geoseg_pipeline.demo.scenes import LABEL_NODATA, LANDCOVER_CLASS_NAMES, write_landcover_scene
from geoseg_pipeline.models.landcover_demo import NUM_CLASSES, WEIGHTS_PATH, LandcoverDemoNet

CROP = 128
"""Side of the training crops in pixels."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults produce the bundled weights."""

    train_scenes: int = 4
    scene_size: int = 1024
    eval_seed: int = 1000
    steps: int = 400
    batch: int = 8
    learning_rate: float = 4e-3
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.scene_size < CROP:
            raise ValueError(f"scene_size must be >= {CROP}, got {self.scene_size}")
        if self.eval_seed < self.train_scenes:
            raise ValueError(
                f"eval_seed must not be a training seed (0..{self.train_scenes - 1}), got {self.eval_seed}"
            )
        if min(self.train_scenes, self.steps, self.batch, self.threads) < 1:
            raise ValueError(f"train_scenes, steps, batch and threads must be >= 1, got {self}")


@dataclass(frozen=True)
class Metrics:
    """Evaluation of the trained model on one unseen scene."""

    eval_seed: int
    eval_size: int
    valid_pixels: int
    pixel_accuracy: float
    iou: dict[str, float]
    miou: float
    train_seconds: float
    train_config: dict[str, float | int]


def main(argv: Sequence[str] | None = None) -> int:
    """Train, save the weights, evaluate and write the metrics; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--metrics-out", type=Path, default=Path("docs/landcover_demo_metrics.json"))
    parser.add_argument("--weights-out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    args = parser.parse_args(argv)
    config = TrainConfig(steps=args.steps)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)

    with tempfile.TemporaryDirectory(prefix="landcover-demo-") as tmp:
        scenes = [_make_scene(Path(tmp), seed, config.scene_size) for seed in range(config.train_scenes)]
        started = time.perf_counter()
        net = train(scenes, config)
        train_seconds = time.perf_counter() - started
        args.weights_out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), args.weights_out)
        image, labels = _make_scene(Path(tmp), config.eval_seed, config.scene_size)

    metrics = evaluate(net, image, labels, config, train_seconds)
    for name, value in metrics.iou.items():
        print(f"IoU {name:<12} {value:.4f}")
    print(f"mIoU {metrics.miou:.4f}  pixel accuracy {metrics.pixel_accuracy:.4f}  (seed {config.eval_seed})")
    print(f"trained {config.steps} steps in {train_seconds:.1f} s; weights -> {args.weights_out}")
    args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
    args.metrics_out.write_text(json.dumps(asdict(metrics), indent=2) + "\n")
    return 0


def train(scenes: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]], config: TrainConfig) -> LandcoverDemoNet:
    """Train a fresh net on random augmented crops of ``scenes`` (images and labels)."""
    rng = np.random.default_rng(config.seed)
    net = LandcoverDemoNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=config.steps)
    net.train()
    for step in range(config.steps):
        images, labels = _batch(scenes, config.batch, rng)
        loss = functional.cross_entropy(net(images), labels, ignore_index=LABEL_NODATA)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == config.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    return net.eval()


def evaluate(
    net: LandcoverDemoNet,
    image: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    config: TrainConfig,
    train_seconds: float,
) -> Metrics:
    """Predict the whole scene at once and score it over the valid pixels."""
    with torch.inference_mode():
        predicted = net(torch.from_numpy(image)[None]).argmax(dim=1)[0].numpy()
    valid = labels != LABEL_NODATA
    iou = intersection_over_union(predicted[valid], labels[valid], NUM_CLASSES)
    return Metrics(
        eval_seed=config.eval_seed,
        eval_size=config.scene_size,
        valid_pixels=int(valid.sum()),
        pixel_accuracy=float((predicted[valid] == labels[valid]).mean()),
        iou={name: round(value, 4) for name, value in zip(LANDCOVER_CLASS_NAMES, iou, strict=True)},
        miou=round(float(np.mean(iou)), 4),
        train_seconds=round(train_seconds, 1),
        train_config={key: value for key, value in asdict(config).items()},
    )


def intersection_over_union(
    predicted: npt.NDArray[np.int64], reference: npt.NDArray[np.int64], num_classes: int
) -> list[float]:
    """IoU per class from flat predictions and references (``nan`` for a class in neither)."""
    confusion = np.bincount(reference * num_classes + predicted, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    return [float(i / u) if u else float("nan") for i, u in zip(intersection, union, strict=True)]


def _make_scene(folder: Path, seed: int, size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    scene_path, labels_path = folder / f"scene-{seed}.tif", folder / f"labels-{seed}.tif"
    write_landcover_scene(scene_path, size, size, seed, labels_path=labels_path)
    with rasterio.open(scene_path) as scene, rasterio.open(labels_path) as reference:
        return scene.read().astype(np.float32), reference.read(1).astype(np.int64)


def _batch(
    scenes: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]], size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops with random flips and quarter turns; crops without valid pixels are redrawn."""
    images: list[npt.NDArray[np.float32]] = []
    labels: list[npt.NDArray[np.int64]] = []
    while len(images) < size:
        image, label = scenes[int(rng.integers(len(scenes)))]
        row = int(rng.integers(image.shape[1] - CROP + 1))
        col = int(rng.integers(image.shape[2] - CROP + 1))
        crop_label = label[row : row + CROP, col : col + CROP]
        if (crop_label == LABEL_NODATA).all():
            continue
        crop_image = image[:, row : row + CROP, col : col + CROP]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        crop_image, crop_label = np.rot90(crop_image, turns, axes=(1, 2)), np.rot90(crop_label, turns)
        if flip:
            crop_image, crop_label = crop_image[:, :, ::-1], crop_label[:, ::-1]
        images.append(np.ascontiguousarray(crop_image))
        labels.append(np.ascontiguousarray(crop_label))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


if __name__ == "__main__":
    raise SystemExit(main())
