"""Images per second of fit over an ImageFolder, with decoding in the calling thread
(num_workers=0) and in background threads (the default), and of decoding alone; beside them,
fit on the same crops already decoded in memory (the compute-bound ceiling).

    python benchmarks/image_folder.py                    # 512 JPEGs of 320x240, 4 classes
    python benchmarks/image_folder.py --images 2048 --size 160 --model small

The JPEGs are written to a temporary folder first (not timed). Each figure is the best of
``--repeat`` passes, after one warm-up pass (the first pass also warms the page cache and the
model's packed weights).
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import fastcnn as fc


def write_images(root, count, classes, width, height, seed=0):
    """``count`` JPEGs, round-robin over the classes: each class a pattern of its own (stripes
    of a class-specific angle and period) with random phase, colour and noise."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        c = i % classes
        angle = np.pi * c / classes
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (4 + 2 * c) + rng.uniform(0, 6.3))
        colour = rng.uniform(0.3, 1.0, 3)
        img = (0.5 + 0.4 * wave)[..., None] * colour + rng.normal(0, 0.05, (height, width, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(
            root / f"class_{c}" / f"{i:06d}.jpg", quality=90)


def build_model(name, classes, size):
    if name == "mobilenet_v2":
        model = fc.models.mobilenet_v2(num_classes=classes, input_shape=(size, size, 3))
    else:
        model = fc.Sequential(
            fc.Conv2d(3, 16, 3, stride=2, padding=1), fc.BatchNorm2d(16), fc.ReLU(),
            fc.Conv2d(16, 32, 3, stride=2, padding=1), fc.BatchNorm2d(32), fc.ReLU(),
            fc.Conv2d(32, 64, 3, stride=2, padding=1), fc.BatchNorm2d(64), fc.ReLU(),
            fc.GlobalAvgPool2d(), fc.Flatten(), fc.Linear(64, classes),
            input_shape=(size, size, 3))
    model.compile(optimizer=fc.SGD(lr=0.01, momentum=0.9), loss=fc.CrossEntropyLoss())
    return model


def best_of(repeat, run):
    run()                                      # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, default=112, help="the crop fed to the model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=["mobilenet_v2", "small"], default="mobilenet_v2")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads of the background run (default: the cores)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    info = fc.info()
    print(f"CPU: {info['cpu']}  ({info['isa']}, {info.get('physical_cores')} physical cores, "
          f"{os.cpu_count()} logical)")
    print(f"fastcnn {info['version']}: {fc.get_num_threads()} compute threads")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_images(root, args.images, args.classes, args.width, args.height)
        options = dict(random_crop=True, horizontal_flip=True, mean="imagenet")
        default = fc.datasets.ImageFolder(root, args.size, num_workers=args.workers, **options)
        workers = [0, default.num_workers]
        print(f"{args.images} JPEGs of {args.width}x{args.height}, {args.classes} classes -> "
              f"random-resized crops of {args.size}x{args.size}, batch {args.batch_size}, "
              f"model {args.model}")
        model = build_model(args.model, args.classes, args.size)
        rows = []
        for n in workers:
            folder = fc.datasets.ImageFolder(root, args.size, num_workers=n, **options)

            def decode():
                for _ in folder.loader(args.batch_size, shuffle=True, seed=0):
                    pass

            def train():
                model.fit(folder, epochs=1, batch_size=args.batch_size, verbose=0)

            decode_s = best_of(args.repeat, decode)
            fit_s = best_of(args.repeat, train)
            rows.append((n, len(folder) / decode_s, len(folder) / fit_s))
        x, y = (np.concatenate(parts) for parts in zip(*default.loader(args.batch_size).eval_batches()))
        memory_s = best_of(args.repeat, lambda: model.fit(x, y, epochs=1, verbose=0,
                                                          batch_size=args.batch_size))
        print(f"{'num_workers':<22} {'decode only (images/s)':>24} {'fit (images/s)':>16}")
        for n, decode_rate, fit_rate in rows:
            label = f"{n}" + (" (calling thread)" if n == 0 else " (background threads)")
            print(f"{label:<22} {decode_rate:>24.1f} {fit_rate:>16.1f}")
        print(f"{'decoded in memory':<22} {'':>24} {len(x) / memory_s:>16.1f}")
        if len(rows) == 2 and rows[0][2] > 0:
            print(f"fit speed-up from background decoding: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
