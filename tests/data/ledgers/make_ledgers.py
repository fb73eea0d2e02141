"""Write OUT/ledger.sqlite files with whatever geoseg_pipeline is importable (see README.md)."""

import nibabel as nib
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

import geoseg_pipeline
from geoseg_pipeline.api import predict


class TwoBands(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], x[:, 1:2]], dim=1)


class Bands(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([100 - x, -torch.abs(x - 150) + 50, x - 200], dim=1)


def main() -> None:
    print(geoseg_pipeline.__file__)
    data = np.random.default_rng(0).integers(0, 255, (3, 40, 50)).astype("uint8")
    with rasterio.open("scene.tif", "w", driver="GTiff", width=50, height=40, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as ds:
        ds.write(data)
    torch.jit.script(TwoBands()).save("m.pt")
    print(predict(["scene.tif"], "m.pt", "out", roi_size=[32, 32], progress=False).ok)
    torch.jit.script(Bands()).save("b.pt")
    vol = np.zeros((20, 18, 10), np.int16)
    vol[3:9, 3:9, 2:6] = 250
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1])), "ct.nii.gz")
    print(predict(["ct.nii.gz"], "b.pt", "vout", roi_size=[16, 16, 8], lesion_classes=[2], progress=False).ok)


if __name__ == "__main__":
    main()
