"""Peak memory (RSS) of ``python -m mnist_cnn.predict`` on 1, 10 and 100 twelve-megapixel JPEGs.

Each case runs the command in its own subprocess and reads that process's peak RSS from ``os.wait4``, so one
case cannot inherit another's peak. The images are 4000x3000 phone-size photos of a digit drawn in dark ink on
light, slightly noisy paper (generated once, then hard-linked, so 100 files cost one file's disk space).

Usage::

    python benchmarks/predict_memory.py [--counts 1 10 100] [--src SRC] [--checkpoint PTH] [--size 4000x3000]

``--src`` picks the ``src/`` directory whose ``mnist_cnn`` runs, e.g. an older checkout's to measure it before
a change (``git worktree add /tmp/wt-base 28a77fe`` then ``--src /tmp/wt-base/src``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SRC = Path(__file__).resolve().parents[1] / "src"
SEED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "seed" / "mnist_VGG.pth"


def draw_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A phone-photo-like picture of a handwritten 4: dark thick strokes on light paper with sensor noise.

    Args:
        size: ``(width, height)`` in pixels.
        seed: Seed of the paper noise.

    Returns:
        An RGB image.
    """
    width, height = size
    picture = Image.new("RGB", size, (228, 224, 214))
    pen = ImageDraw.Draw(picture)
    unit, stroke = height / 10, max(2, height // 60)
    left, top = width / 2 - 2 * unit, height / 2 - 3 * unit
    ink = (40, 38, 60)
    pen.line([(left + 2.5 * unit, top), (left, top + 4 * unit), (left + 4 * unit, top + 4 * unit)], fill=ink, width=stroke, joint="curve")
    pen.line([(left + 3 * unit, top + 2 * unit), (left + 3 * unit, top + 6 * unit)], fill=ink, width=stroke)
    noise = np.random.default_rng(seed).normal(0, 4, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(picture, np.float32) + noise, 0, 255).astype(np.uint8))


def make_folder(root: Path, count: int, source: Path) -> Path:
    """A folder holding ``count`` hard links (copies where links fail) of ``source``."""
    folder = root / f"photos_{count}"
    folder.mkdir()
    for n in range(count):
        target = folder / f"photo_{n:03d}.jpg"
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
    return folder


def peak_rss_mib(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``command``; return its peak RSS in MiB, its exit status and the last line it printed to stderr."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    lines = stderr.strip().splitlines()
    return peak, process.returncode, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    """Generate the photos, run each case, print a table and (with ``--out``) write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100], help="numbers of photos, one run each")
    parser.add_argument("--src", type=Path, default=SRC, help="the src/ directory whose mnist_cnn to measure")
    parser.add_argument("--checkpoint", type=Path, default=SEED_WEIGHTS, help="model for predict")
    parser.add_argument("--size", default="4000x3000", help="photo size WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.lower().split("x"))

    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "OMP_NUM_THREADS": "1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="predict_memory_") as tmp:
        root = Path(tmp)
        source = root / "photo.jpg"
        draw_photo((width, height)).save(source, quality=92)
        print(f"photo: {width}x{height} JPEG, {source.stat().st_size / 1e6:.1f} MB; code: {args.src}", flush=True)
        for count in args.counts:
            folder = make_folder(root, count, source)
            command = [sys.executable, "-m", "mnist_cnn.predict", "--checkpoint", str(args.checkpoint), "--device", "cpu", str(folder)]
            peak, status, last = peak_rss_mib(command, env)
            results.append({"images": count, "peak_rss_mib": round(peak, 1), "exit_status": status})
            print(f"{count:>5} images: peak RSS {peak:8.1f} MiB  (exit {status}{'; ' + last if status else ''})", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"src": str(args.src), "size": [width, height], "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
