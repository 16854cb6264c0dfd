"""The atlas batch job on the whole of EfficientNet-Lite0 (every block): 1 vs 2 processes.

Prints three tables:

1. **Wall time** of ``build_atlas_steps`` (the build alone: imports and model loading not
   counted) with 1 process and with N processes under ``torchrun`` (gloo, 127.0.0.1), and the
   speed-up; every run starts from an empty folder. Also whether the N-process atlas equals the
   1-process one (every picture and layer.json byte for byte).
2. **Peak memory per process** (``ru_maxrss``, each rank) against the number of units built per
   layer (``--max-units`` sweep): flat means the job streams its pieces.
3. **Throughput per unit** of the AM batches inside the job (time between the job's progress
   steps of its AM pieces: the optimization, the exchange between ranks, keeping the piece)
   against the same batches run bare (:func:`~cnnvis_widgets.core.atlas.layer_grid` on the same
   units, cache off), interleaved layer by layer in one process. Target: job / bare >= 0.9.

The steps are reduced (``--steps``, default 8, instead of the 128 of the widget) and stated in
the output; so are the dataset and probe sizes. A short run::

    python benchmarks/bench_atlas_build.py --max-units 8 --steps 8 --sweep 4,8

Each measurement runs in a fresh process (``--worker``), one thread per process
(``CNNVIS_NUM_THREADS=1``). The machine may be shared: the numbers are wall time. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _settings(args: argparse.Namespace):
    from cnnvis_widgets.core.atlas.build import BuildSettings

    return BuildSettings(
        steps=args.steps, size=args.size, batch=args.batch, n_images=args.n_images,
        shard=args.shard, probe_images=args.probe_images, inversion_steps=args.inversion_steps,
        inversion_size=args.inversion_size, max_units=args.max_units,
    )  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """One rank: build, time it, report ``{rank, wall, rss_mb, am_seconds, am_units}``."""
    from cnnvis_widgets import load_model
    from cnnvis_widgets.core.atlas import default_atlas_layers
    from cnnvis_widgets.core.atlas.build import build_atlas_steps
    from cnnvis_widgets.core.atlas.distributed import setup

    group = setup("cpu")
    handle = load_model(args.model, device="cpu")
    layers = args.layers or None
    group.barrier()
    t0 = last = time.perf_counter()
    am_seconds, am_items = 0.0, 0
    gen = build_atlas_steps(handle, layers, None, args.out, _settings(args), group=group)
    for step in gen:
        now = time.perf_counter()
        if step.metrics.get("stage") == "am":
            am_seconds += now - last
            am_items += 1
        last = now
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    names = layers or default_atlas_layers(handle)
    units = sum(min(handle.layer(n).channels, args.max_units or 10**9) for n in names)
    rec = {"rank": group.rank, "world": group.world, "wall": wall, "rss_mb": rss,
           "am_seconds": am_seconds, "am_items": am_items, "units": units}  # fmt: skip
    if args.bare and group.rank == 0:
        rec.update(bare(handle, args))
    Path(args.report).with_suffix(f".{group.rank}.json").write_text(json.dumps(rec))
    group.close()


def bare(handle, args: argparse.Namespace) -> dict:
    """The job's AM batches run bare (layer_grid, cache off) and inside a fresh one-process job
    of AM pieces only, interleaved layer by layer: seconds per unit of each."""
    from cnnvis_widgets.core import atlas as A
    from cnnvis_widgets.core.atlas.build import build_atlas_steps

    layers = args.layers or A.default_atlas_layers(handle)
    s = _settings(args)
    s.probe_images, s.inversion_steps, s.projections, s.top_classes = 0, 0, False, 0
    t_bare = t_job = 0.0
    units = 0
    for layer in layers:
        n = min(handle.layer(layer).channels, args.max_units or 10**9)
        t = time.perf_counter()
        for lo in range(0, n, args.batch):
            chunk = list(range(lo, min(n, lo + args.batch)))
            A.layer_grid(handle, layer, steps=args.steps, size=args.size, batch=len(chunk),
                         units=chunk, use_cache=False)  # fmt: skip
        t_bare += time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            last = time.perf_counter()
            for step in build_atlas_steps(handle, [layer], None, tmp, s):
                now = time.perf_counter()
                if step.metrics.get("stage") == "am":
                    t_job += now - last
                last = now
        units += n
    return {"bare_s_per_unit": t_bare / units, "job_s_per_unit": t_job / units, "units": units}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, procs: int, out: Path, extra: list[str]) -> list[dict]:
    report = out.with_suffix(".report")
    me = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--report", str(report),
          *_passthrough(args), *extra]  # fmt: skip
    if procs == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *me]  # fmt: skip
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, CNNVIS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=path)
    subprocess.run(cmd, env=env, check=True)
    return [json.loads(report.with_suffix(f".{r}.json").read_text()) for r in range(procs)]


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = ["--model", args.model, "--steps", str(args.steps), "--size", str(args.size),
           "--batch", str(args.batch), "--n-images", str(args.n_images), "--shard",
           str(args.shard), "--probe-images", str(args.probe_images), "--inversion-steps",
           str(args.inversion_steps), "--inversion-size", str(args.inversion_size)]  # fmt: skip
    if args.layers:
        out += ["--layers", *args.layers]
    return out


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "layers").rglob("*"))
        if p.is_file()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--layers", nargs="+", default=None, help="default: every block")
    p.add_argument("--steps", type=int, default=8, help="AM steps (reduced from 128)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-images", type=int, default=16, help="top-k dataset (augmented samples)")
    p.add_argument("--shard", type=int, default=8)
    p.add_argument("--probe-images", type=int, default=16)
    p.add_argument("--inversion-steps", type=int, default=4)
    p.add_argument("--inversion-size", type=int, default=64)
    p.add_argument("--max-units", type=int, default=None, help="units per layer (default all)")
    p.add_argument("--procs", type=int, default=2, help="processes of the distributed run")
    p.add_argument("--sweep", default="", help="max-units values for the memory table, e.g. 4,16")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    mu = [] if args.max_units is None else ["--max-units", str(args.max_units)]
    print(f"# atlas build of {args.model}, layers: {' '.join(args.layers or ['every block'])}")
    print(f"# reduced: AM {args.steps} steps at {args.size}px, batch {args.batch}; top-k over "
          f"{args.n_images} images; dissection {args.probe_images} probe images; inversion "
          f"{args.inversion_steps} steps; units per layer: {args.max_units or 'all'}")  # fmt: skip
    print("# one torch thread per process; wall time on a machine that may be shared\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = launch(args, 1, root / "one", mu + ["--bare"])
        many = launch(args, args.procs, root / "many", mu)
        same = _snapshot(root / "one") == _snapshot(root / "many")
        w1, wn = one[0]["wall"], max(r["wall"] for r in many)
        print("| processes | wall (s) | speed-up | peak RSS per process (MB) | same atlas |")
        print("|---|---|---|---|---|")
        print(f"| 1 | {w1:.1f} | 1.00 | {one[0]['rss_mb']:.0f} | - |")
        rss = " / ".join(f"{r['rss_mb']:.0f}" for r in many)
        print(f"| {args.procs} (gloo) | {wn:.1f} | {w1 / wn:.2f} | {rss} | {same} |\n")
        b = one[0]
        print("| AM per unit | seconds |")
        print("|---|---|")
        print(f"| bare batches (layer_grid) | {b['bare_s_per_unit']:.3f} |")
        print(f"| inside the job | {b['job_s_per_unit']:.3f} |")
        print(f"| throughput job / bare | {b['bare_s_per_unit'] / b['job_s_per_unit']:.2f} |\n")
        sweep = [int(v) for v in args.sweep.split(",") if v]
        if sweep:
            print("| units per layer | units in all | peak RSS (MB), 1 process |")
            print("|---|---|---|")
            for n in sweep:
                r = launch(args, 1, root / f"sweep{n}", ["--max-units", str(n)])[0]
                print(f"| {n} | {r['units']} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
