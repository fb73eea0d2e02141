"""A real full file system (a 2 MiB tmpfs, mounted in a user and mount namespace of its own so that
no privilege is needed): the label sink fails with "no space left on device" naming the folder, and
leaves nothing behind that looks like an output."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np
    from affine import Affine

    from geoseg_pipeline.errors import SinkError
    from geoseg_pipeline.geometry import Grid, Window
    from geoseg_pipeline.sinks import ClassLegend, CogLabelSink

    root = Path(sys.argv[1])
    grid = Grid((4096, 4096), Affine(10.0, 0, 600000.0, 0, -10.0, 5000000.0), "EPSG:32632")
    sink = CogLabelSink(root / "item", grid, ClassLegend(("a", "b"), ("#000000", "#ffffff")), 255)
    rng = np.random.default_rng(0)
    try:
        for r in range(0, 4096, 512):
            for c in range(0, 4096, 512):  # random labels: nothing to compress
                sink.write(Window((r, c), (512, 512)), rng.integers(0, 255, (512, 512), dtype=np.uint8))
        sink.commit()
        print("NO ERROR")
    except SinkError as exc:
        sink.abort()
        print("ERROR", exc)
    print("LEFT", sorted(p.name for p in (root / "item").iterdir()))
""")


def test_a_full_disk_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "job.py").write_text(SCRIPT)
    shell = f"mount -t tmpfs -o size=2m tmpfs {disk} && {sys.executable} {tmp_path / 'job.py'} {disk}"
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ERROR" in out and "NO ERROR" not in out, out
    assert "no space left on device" in out and str(disk / "item") in out, out
    assert "LEFT []" in out, out  # no staging folder, no labels.tif
