"""Inference seconds per image next to the compute floor of this machine.

    python benchmarks/bench_inference.py [--filters 16] [--depth 4] [--no-batch-norm]
        [--padding same] [--model PATH.keras] [--size 512] [--stack 4] [--repeats 3] [--tta]

The floor is the model's forward FLOPs (`unet_keras.model.forward_flops`,
convolutions only) divided by the float32 matmul rate NumPy reaches here
(np.matmul of two 2048x2048 matrices). It prints, for `--size` images: one
image in one forward pass, a stack of `--stack` images per forward pass
(seconds per image: how a TIFF stack is predicted), the same with BatchNorm
folded into the convolutions (`fold_batch_norm`, what `train` and `predict`
use), and `predict_tiled` with its defaults (overlapping tiles cost more
FLOPs than the image itself; both counts are shown). Whole-image rows need a
same-padded model whose input size fits.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import unet_keras  # noqa: E402, F401, I001  (first: it turns oneDNN on before TensorFlow loads)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from unet_keras import inference  # noqa: E402
from unet_keras.folding import fold_batch_norm  # noqa: E402
from unet_keras.model import build_unet, forward_flops  # noqa: E402


def matmul_rate(n=2048, repeats=5):
    """Best float32 FLOP/s of np.matmul on n x n matrices.

    Warns when OPENBLAS_CORETYPE pins OpenBLAS to a named core's kernels:
    some machines set it because old OpenBLAS builds misbehave on their CPU,
    and on a newer CPU it can halve the rate (Haswell's AVX2 kernels on an
    AVX-512 CPU: 268 against 497 GFLOP/s), which puts the floor too low.
    """
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype:
        print(
            f"Note: OPENBLAS_CORETYPE={coretype} pins NumPy's matmul to that core's kernels; "
            "the floor may be too low. For this CPU's own rate run the benchmark with "
            "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`."
        )
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    np.matmul(a, b)  # warm-up
    best = min(_seconds(lambda: np.matmul(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _best_seconds(call, repeats):
    call()  # warm-up: tracing, allocation
    return min(_seconds(call) for _ in range(repeats))


def tiled_flops(model, image_hw, tta=False, **kwargs):
    """FLOPs that `predict_tiled` spends: its tile count times one tile's FLOPs."""
    geometry = inference._model_geometry(model)
    tile = inference._check_tile(kwargs.get("tile"), geometry)
    plan = inference._make_plan(model, geometry, tile, kwargs.get("overlap"), image_hw)
    offsets, _, _ = inference._layout(plan, image_hw)
    tiles = len(offsets[0]) * len(offsets[1]) * (8 if tta else 1)
    return tiles, tiles * forward_flops(model, plan.tile), plan


def _model(args):
    if args.model:
        return keras.models.load_model(args.model, compile=False), args.model
    model = build_unet(
        filters=args.filters, depth=args.depth, batch_norm=args.batch_norm,
        padding=args.padding, dropout=0,
    )
    name = (
        f"build_unet(filters={args.filters}, depth={args.depth}, "
        f"batch_norm={args.batch_norm}, padding={args.padding!r})"
    )
    return model, name


def _row(label, seconds, flops, rate):
    floor = flops / rate
    print(
        f"{label:<34} {seconds:8.3f} s {flops / 1e9:9.2f} GFLOP "
        f"{flops / seconds / 1e9:8.1f} GFLOP/s  floor {floor:7.3f} s  x{seconds / floor:5.2f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--padding", choices=("same", "valid"), default="same")
    parser.add_argument("--model", help="a saved .keras model instead of build_unet")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--stack", type=int, default=4, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", action="store_true", help="also time 8-fold TTA")
    args = parser.parse_args(argv)

    rate = matmul_rate()
    model, name = _model(args)
    channels = model.input_shape[-1]
    image = np.random.default_rng(0).random((args.size, args.size, channels), np.float32)
    print(f"keras {keras.__version__} on {keras.backend.backend()}, {os.cpu_count()} CPU(s)")
    print(f"model: {name}, {model.count_params():,} parameters")
    print(f"NumPy float32 matmul (2048^2): {rate / 1e9:.1f} GFLOP/s\n")

    folded = fold_batch_norm(model)
    geometry = inference._model_geometry(model)
    size = args.size
    if not geometry.valid and not geometry.fixed and size % 2**geometry.depth == 0:
        flops = forward_flops(model, size)
        one, stack = image[None], np.repeat(image[None], args.stack, axis=0)
        for label, net, batch in (
            (f"whole {size}x{size}, one pass", model, one),
            (f"stack of {args.stack}, per image", model, stack),
            (f"stack of {args.stack}, BatchNorm folded", folded, stack),
        ):
            seconds = _best_seconds(lambda n=net, b=batch: n.predict_on_batch(b), args.repeats)
            _row(label, seconds / len(batch), flops, rate)

    tiles, flops, plan = tiled_flops(model, (size, size))
    seconds = _best_seconds(lambda: inference.predict_tiled(folded, image), args.repeats)
    _row(f"predict_tiled, folded: {tiles} x {plan.tile[0]}x{plan.tile[1]}", seconds, flops, rate)
    if args.tta:
        tiles, flops, _ = tiled_flops(model, (size, size), tta=True)
        seconds = _best_seconds(lambda: inference.predict_tiled(folded, image, tta=True), 1)
        _row(f"predict_tiled, folded, TTA: {tiles} tiles", seconds, flops, rate)


if __name__ == "__main__":
    main()
