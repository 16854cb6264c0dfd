"""Attribution and top-9 passes: time against the floor, side by side with Captum.

Prints two tables.

1. Attribution, per image: the median time of each method of ours (and of Captum's equivalent when
   ``captum`` imports), divided by the floor: one bare forward + backward of the same model on the
   same input (parameters frozen, gradient to the input only, the score of the same class). A
   "full" column shows a naive ``loss.backward()`` with parameter gradients, for scale.
   Measurements are interleaved (floor, ours, Captum, floor, ...) so that load from other
   processes hits all alike. Outputs are compared as well: "same" says whether ours and Captum's
   agree (Captum's guided backprop and DeconvNet only modify ``nn.ReLU`` modules, so on
   EfficientNet-Lite0, whose rectifiers are ReLU6, Captum returns plain gradients there).
2. Top-9 pass over N images: ``top_k_patches`` (every unit of the layer, k=9) against N bare forward
   passes in the same batches: of the whole network, and up to the layer (the floor). The images
   are decoded beforehand (pixel tensors), so both sides do the same work; the receptive-field
   computation, done once per layer and model, is reported apart. A last line includes the
   generation of the augmented dataset.

    python benchmarks/bench_attribution.py                      # CPU, EfficientNet-Lite0
    python benchmarks/bench_attribution.py --model torchvision:resnet18 --images 64

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timing import sync

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.hooks import StopForward, capture
from cnnvis_widgets.data import sample_image
from cnnvis_widgets.data.datasets import augmented_samples


def measure(fns: dict, device: torch.device, rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each function, calls interleaved round-robin.

    CPU time is the calling thread's (``time.thread_time``; torch runs one thread on CPU), which
    other processes on a shared machine disturb far less than the wall clock. On CUDA only the
    wall clock means anything.
    """
    for fn in fns.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            c0, w0 = time.thread_time(), time.perf_counter()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.thread_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def floor_fn(handle, x: torch.Tensor, cls: int):
    """One bare forward + backward to the input, parameters frozen."""

    def run() -> None:
        with handle.frozen():
            xi = x.clone().requires_grad_(True)
            out = handle.net(xi)
            torch.autograd.grad(out[:, cls].sum(), xi)

    return run


def full_fn(handle, x: torch.Tensor, cls: int):
    """A naive forward + loss.backward() (parameter gradients computed too)."""

    def run() -> None:
        xi = x.clone().requires_grad_(True)
        handle.model.zero_grad(set_to_none=True)
        handle.model(xi)[:, cls].sum().backward()

    return run


def captum_fns(handle, x: torch.Tensor, cls: int, layer: str) -> dict:
    try:
        import captum.attr as C
    except Exception as exc:  # noqa: BLE001 - optional peer
        print(f"(captum not importable: {type(exc).__name__}; no peer column)")
        return {}
    m = handle.net  # the twin: handle.module(layer) is one of its modules
    mod = handle.module(layer)
    size = tuple(x.shape[-2:])

    def gradcam():
        cam = C.LayerGradCam(m, mod).attribute(x, target=cls, relu_attributions=True)
        return C.LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")

    def frozen(fn):
        def run():
            with handle.frozen():
                return fn()

        return run

    return {
        "saliency": frozen(lambda: C.Saliency(m).attribute(x, target=cls, abs=False)),
        "deconvnet": frozen(lambda: C.Deconvolution(m).attribute(x, target=cls)),
        "guided_backprop": frozen(lambda: C.GuidedBackprop(m).attribute(x, target=cls)),
        "grad_cam": frozen(gradcam),
        "guided_grad_cam": frozen(
            lambda: C.GuidedGradCam(m, mod).attribute(x, target=cls, interpolate_mode="bilinear")
        ),
    }


def attribution_table(handle, batch: int, rounds: int) -> None:
    dev = handle.device
    x = handle.preprocess(sample_image("cat")).repeat(batch, 1, 1, 1)
    with torch.no_grad():
        cls = int(handle.model(x[:1]).argmax())
    layer = A.default_cam_layer(handle)
    ours = {
        name: (
            lambda fn=fn, needs=needs: fn(handle, x, cls, layer) if needs else fn(handle, x, cls)
        )
        for name, (_, fn, needs) in A.METHODS.items()
    }
    peers = captum_fns(handle, x, cls, layer)
    floor, full = floor_fn(handle, x, cls), full_fn(handle, x, cls)
    same = {}
    for name in ours:
        if name in peers:
            a, b = ours[name](), peers[name]()
            scale = float(b.abs().max()) or 1.0
            same[name] = bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale))
    fns = {"floor": floor, "full": full}
    for name, fn in ours.items():
        fns[name] = fn
        if name in peers:
            fns[f"captum:{name}"] = peers[name]
    timed = measure(fns, dev, rounds)
    clock = 0 if dev.type == "cuda" else 1  # CPU time on CPU, wall clock on CUDA
    med = {k: v[clock] / batch for k, v in timed.items()}
    wall = {k: v[0] / batch for k, v in timed.items()}
    fl = med["floor"]
    print(
        f"\n{handle.name}, batch {batch}, {x.shape[-1]} px, class {cls}, Grad-CAM layer {layer}; "
        f"{'CPU' if clock else 'wall'} time per image, median of {rounds} interleaved calls: "
        f"floor {fl * 1e3:.2f} ms, naive full backward {med['full'] * 1e3:.2f} ms"
    )
    print(
        f"{'method':16s} {'ours ms':>8} {'captum ms':>10} {'floor ms':>9} {'ours/floor':>10} "
        f"{'captum/floor':>12} {'same':>5} {'wall ours/floor':>16}"
    )
    for name in ours:
        peer = med.get(f"captum:{name}")
        print(
            f"{name:16s} {med[name] * 1e3:8.2f} "
            f"{(f'{peer * 1e3:10.2f}' if peer else '         -')} {fl * 1e3:9.2f} "
            f"{med[name] / fl:10.3f} {(f'{peer / fl:12.3f}' if peer else '           -')} "
            f"{ ({True: 'yes', False: 'NO'}.get(same.get(name)) or '-'):>5} "
            f"{wall[name] / wall['floor']:16.3f}"
        )


def forward_floor(handle, batches: list[torch.Tensor], layer: str | None):
    def run() -> None:
        with torch.no_grad():
            for b in batches:
                x = handle.normalize(b)
                if layer is None:
                    handle.net(x)
                    continue
                with capture(handle, [layer], stop_early=True):
                    try:
                        handle.net(x)
                    except StopForward:
                        pass

    return run


def topk_table(handle, layer: str, n_images: int, batch_size: int, rounds: int) -> None:
    dev = handle.device
    size = max(handle.input_size)
    ds = augmented_samples(n=n_images, size=size)
    t = time.perf_counter()
    pixels = [T.to_pixels(img, handle.input_size, handle)[0] for _, img in ds]
    decode = time.perf_counter() - t
    t = time.perf_counter()
    T.receptive_field(handle, layer)
    rf_time = time.perf_counter() - t
    batches = [
        torch.stack(pixels[i : i + batch_size]).to(dev) for i in range(0, n_images, batch_size)
    ]

    def ours() -> None:
        T.top_k_patches(handle, layer, pixels, k=9, batch_size=batch_size)

    full, to_layer = forward_floor(handle, batches, None), forward_floor(handle, batches, layer)
    timed = measure({"layer": to_layer, "ours": ours, "full": full}, dev, rounds)
    clock = 0 if dev.type == "cuda" else 1
    m = {k: v[clock] for k, v in timed.items()}
    t = time.perf_counter()
    T.top_k_patches(handle, layer, ds, k=9, batch_size=batch_size)
    end_to_end = time.perf_counter() - t
    units = handle.layer(layer).channels
    print(
        f"\ntop-9 pass, {handle.name} layer {layer} ({units} units), {n_images} images of "
        f"{size} px, batches of {batch_size}"
    )
    print(
        f"{'figure (' + ('CPU' if clock else 'wall') + ' time)':44s} {'ours s':>8} "
        f"{'floor s':>8} {'ratio':>7}\n"
        f"{'vs N forward passes of the whole network':44s} {m['ours']:8.3f} {m['full']:8.3f} "
        f"{m['ours'] / m['full']:7.3f}\n"
        f"{'vs N forward passes up to the layer':44s} {m['ours']:8.3f} {m['layer']:8.3f} "
        f"{m['ours'] / m['layer']:7.3f}"
    )
    print(
        f"receptive field (once per model and layer): {rf_time:.2f} s; end to end with the "
        f"augmented dataset made on the fly: {end_to_end:.2f} s (decoding alone {decode:.2f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved calls per function")
    ap.add_argument("--layer", default=None, help="top-9 layer (default: the widget's)")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument(
        "--peer-model",
        default="torchvision:resnet18",
        help="a second model with nn.ReLU, where Captum computes the same maps",
    )
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    h = load_model(args.model, device=args.device)
    print(f"device {h.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    attribution_table(h, args.batch, args.rounds)
    if args.peer_model and args.peer_model != args.model:
        attribution_table(load_model(args.peer_model, device=args.device), args.batch, args.rounds)
    from cnnvis_widgets.widgets.deconvnet import default_deconv_layer

    layer = args.layer or default_deconv_layer(h)
    topk_table(h, layer, args.images, 16, max(3, args.rounds // 3))


if __name__ == "__main__":
    main()
