"""Data-scale benchmark: ``python -m brain_mri.bench_data`` (not a test; run it on an idle machine).

On a generated folder of phantom slices (``--images`` PNGs of 256 px, two classes, written once under
``--folder`` and kept), or on a data set of your own (``--data``), each in a fresh process so that imports
and the page cache are counted as a user meets them:

- the first index: listing, decoding on every core, fingerprints, duplicate groups, written to an empty
  decode cache (``data.cache_dir``);
- grouping alone: the duplicate groups of the index's fingerprints;
- a second run's start: the same data module again, its images mapped from the decode cache;
- peak memory of a short training run (``train.py``, a few batches) in one process and under 2-process
  DDP on the CPU: the proportional set size (PSS) summed over the run's processes, which counts pages
  shared by processes (the mapped decoded set, libraries) once in all.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[2]  # run from a clone of the project: train.py is there
CLASSES = ("no", "yes")
COMPLETE = ".complete"  # written last: the folder holds every image


def write_phantoms(folder: Path, first: int, count: int, size: int) -> None:
    """Phantom slices ``first`` .. ``first + count - 1``, each from its own seed: every image distinct."""
    from brain_mri.data.synthetic import phantom_slice

    for number in range(first, first + count):
        lesion = number % 2 == 1
        image, _ = phantom_slice(np.random.default_rng([7, number]), size, lesion)
        image.save(folder / CLASSES[lesion] / f"{number:06d}.png")


def generate(folder: Path, images: int, size: int = 256) -> Path:
    """``images`` phantom PNGs of ``size`` pixels in ``folder/no`` and ``folder/yes`` (kept: written once)."""
    marker = folder / COMPLETE
    if marker.exists() and marker.read_text() == f"{images} {size}":
        return folder
    if folder.exists() and not marker.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} holds files the benchmark did not write: name an empty --folder.")
    shutil.rmtree(folder, ignore_errors=True)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    chunk = 1000
    write = partial(write_phantoms, folder, size=size)
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        firsts = range(0, images, chunk)
        list(pool.map(write, firsts, [min(chunk, images - first) for first in firsts]))
    marker.write_text(f"{images} {size}")
    return folder


def start(root: str, cache: str, image_size: int) -> dict:
    """What a run does before training (index and split), timed inside this process."""
    from brain_mri.data import BrainMRIDataModule

    began = time.perf_counter()
    datamodule = BrainMRIDataModule(root, image_size=image_size, cache_dir=cache)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.index is not None
    return {
        "images": len(datamodule.files),
        "groups": len(set(datamodule.index.groups.tolist())),
        "largest_group": int(np.bincount(datamodule.index.groups).max()),
        "inside_s": time.perf_counter() - began,
    }


def timed_start(root: Path, cache: Path, image_size: int) -> dict:
    """:func:`start` in a fresh Python, with the wall time of the whole process (imports included)."""
    began = time.perf_counter()
    command = [sys.executable, "-m", "brain_mri.bench_data", "--start", str(root), "--cache", str(cache)]
    done = subprocess.run(
        [*command, "--image-size", str(image_size)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - began}


def grouping_time(root: Path, cache: Path, image_size: int) -> float:
    """Seconds to group the index's fingerprints (taken from the decode cache) into duplicate groups."""
    from brain_mri.data import BrainMRIDataModule
    from brain_mri.data.duplicates import duplicate_groups

    datamodule = BrainMRIDataModule(str(root), image_size=image_size, cache_dir=str(cache))
    datamodule.prepare_data()
    index = datamodule.index
    assert index is not None
    labels = np.array([item.label for item in index.files])
    began = time.perf_counter()
    duplicate_groups(index.fingerprints, labels, index.pixel_hashes, datamodule.hparams.duplicate_threshold)
    return time.perf_counter() - began


def peak_memory(command: list[str], interval: float = 0.5) -> dict:
    """Run ``command``; the peak of the PSS (and of the RSS) summed over it and its child processes."""
    import psutil

    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(process.pid)
    peak_pss = peak_rss = 0
    most = 0
    while process.poll() is None:
        pss = rss = 0
        processes = [parent, *parent.children(recursive=True)]
        for member in processes:
            try:
                info = member.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss, rss = pss + info.pss, rss + info.rss
        peak_pss, peak_rss, most = max(peak_pss, pss), max(peak_rss, rss), max(most, len(processes))
        time.sleep(interval)
    if process.returncode:
        assert process.stderr is not None
        raise RuntimeError(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-4000:]}")
    return {"peak_pss_gib": peak_pss / 2**30, "peak_rss_gib": peak_rss / 2**30, "processes": most}


def training_memory(root: Path, cache: Path, image_size: int, out: Path, ddp: bool) -> dict:
    """Peak memory of a short ``train.py`` run: 20 training batches, 4 validation batches, and 1 % of the
    images each for validation and test (all of which are tested and predicted)."""
    strategy = ["trainer=ddp", "trainer.accelerator=cpu"] if ddp else ["trainer.accelerator=cpu"]
    command = [
        sys.executable,
        "train.py",
        *strategy,
        "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=4",
        "data.val_fraction=0.01",
        "data.test_fraction=0.01",
        "trainer.max_epochs=1",
        "model=resnet18",
        f"data.root={root}",
        f"data.cache_dir={cache}",
        f"data.image_size={image_size}",
        "gallery_images=0",
        "logger=csv",
        f"hydra.run.dir={out / ('ddp' if ddp else 'one')}",
    ]
    return peak_memory(command)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000, help="phantom PNGs to generate")
    parser.add_argument("--folder", type=Path, default=PROJECT / "outputs" / "bench_data")
    parser.add_argument("--data", type=Path, help="a data set of your own instead of the phantoms")
    parser.add_argument("--image-size", type=int, default=100, help="data.image_size")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the two training runs")
    parser.add_argument("--start", help=argparse.SUPPRESS)  # one timed start, in a fresh process
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}.")
    if args.folder.exists() and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is a file: name a folder.")
    if args.start:
        result = start(args.start, args.cache, args.image_size)
        print(json.dumps(result))
        return result
    began = time.perf_counter()
    root = args.data.resolve() if args.data else generate(args.folder / "images", args.images)
    generated_s = time.perf_counter() - began
    cache = args.folder / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(args.folder / "runs", ignore_errors=True)  # the training runs' folders: made anew
    first = timed_start(root, cache, args.image_size)
    second = timed_start(root, cache, args.image_size)
    result = {
        "data": str(root),
        "cores": len(os.sched_getaffinity(0)),
        "image_size": args.image_size,
        "generate_s": round(generated_s, 1),
        "first_index_s": round(first["process_s"], 1),
        "second_start_s": round(second["process_s"], 1),
        "grouping_s": round(grouping_time(root, cache, args.image_size), 1),
        "images": first["images"],
        "groups": first["groups"],
        "largest_group": first["largest_group"],
    }
    if not args.skip_memory:
        print(json.dumps(result), flush=True)  # the timings, before the slower memory runs
        one = training_memory(root, cache, args.image_size, args.folder / "runs", ddp=False)
        two = training_memory(root, cache, args.image_size, args.folder / "runs", ddp=True)
        result |= {
            "one_process_peak_pss_gib": round(one["peak_pss_gib"], 2),
            "ddp_2_peak_pss_gib": round(two["peak_pss_gib"], 2),
            "ddp_2_over_one": round(two["peak_pss_gib"] / one["peak_pss_gib"], 2),
            "one_process_peak_rss_gib": round(one["peak_rss_gib"], 2),
            "ddp_2_peak_rss_gib": round(two["peak_rss_gib"], 2),
        }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
