"""The ``fastcnn`` command line."""
import argparse
import json
import sys


def _cmd_info(args):
    import fastcnn
    info = fastcnn.info(measure_peak=True)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    openmp = info["openmp"] or {}
    print(f"fastcnn {info['version']} on {info['machine']} ({info['cpu']})")
    print(f"  ISA:        {info['isa']} (available: {', '.join(info['available_isas'])})")
    print(f"  OpenMP:     {openmp.get('library', 'not found')} {openmp.get('version') or ''}".rstrip())
    print(f"  threads:    {info['num_threads']} (physical cores: {info['physical_cores']})")
    caches = ", ".join(f"{k} {v}" for k, v in info["caches"].items())
    print(f"  caches:     {caches or 'unknown'}")
    print(f"  FMA peak:   {info['peak_gflops_1_thread']} GFLOP/s on 1 thread, "
          f"{info['peak_gflops_all_threads']} GFLOP/s on {info['num_threads']} (measured, float32)")
    return 0


# --- train -----------------------------------------------------------------------------------
# Measured on the bundled subset: 96.5-97.4% test accuracy over seeds 0-3 (96.1-97.2% with 6 epochs).
TRAIN_DEFAULTS = dict(epochs=8, batch_size=64, lr=3e-3, optimizer="adam", schedule="cosine", seed=0)


# Options that change what a run computes: a resumed run must use the checkpoint's values.
_RUN_OPTIONS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "data", "seed", "limit",
                "model")


def _cmd_train(args):
    import os
    import time

    import fastcnn as fc
    start = time.perf_counter()
    world = fc.distributed.init() if args.distributed else fc.distributed.world()
    if world.rank != 0:   # rank 0 reports, saves and checkpoints for all
        sys.stdout = open(os.devnull, "w")
    checkpoint = args.checkpoint or args.output + ".ckpt"
    run = {k: getattr(args, k) for k in _RUN_OPTIONS}
    resume_from = None
    if args.resume:
        if os.path.exists(checkpoint):
            try:
                saved = fc.io.read_checkpoint_info(checkpoint)
            except ValueError as exc:
                print(f"fastcnn train: cannot resume: {exc}", file=sys.stderr)
                return 2
            options = (saved.get("metadata") or {}).get("fastcnn train", {})
            differ = [k for k in _RUN_OPTIONS if options.get(k, run[k]) != run[k]]
            if differ:
                print("fastcnn train: cannot resume: the checkpoint was made with "
                      + ", ".join(f"--{k.replace('_', '-')} {options[k]}" for k in differ)
                      + "; pass the same options, or delete " + checkpoint, file=sys.stderr)
                return 2
            resume_from = saved.get("epochs_done", 0)
        else:
            print(f"no checkpoint {checkpoint}: starting from the first epoch")
    elif os.path.exists(checkpoint):
        print(f"note: overwriting {checkpoint}, left by an interrupted run "
              f"(--resume continues such a run)")
    if args.threads:
        fc.set_num_threads(args.threads)
    if args.data:
        (x, y), (x_test, y_test) = fc.datasets.load_mnist(args.data)
        source = f"MNIST IDX files in {args.data}"
    else:
        (x, y), (x_test, y_test) = fc.datasets.load_mnist(seed=args.seed)
        source = "the bundled 5,000-digit MNIST subset"
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    fc.manual_seed(args.seed)
    model = fc.models.lenet5() if args.model == "lenet5" else fc.models.small_cnn((28, 28, 1))
    name = "LeNet-5" if args.model == "lenet5" else "small CNN"
    optimizer = {"adam": fc.Adam, "sgd": lambda lr: fc.SGD(lr=lr, momentum=0.9, nesterov=True),
                 "adamw": fc.AdamW}[args.optimizer](lr=args.lr)
    model.compile(optimizer=optimizer, loss=fc.CrossEntropyLoss())
    print(f"fastcnn {fc.__version__}: training {name} on {source} "
          f"({len(x):,} training / {len(x_test):,} test digits)")
    ranks = f"{world.size} ranks x " if world.size > 1 else ""
    per_rank = " per rank" if world.size > 1 else ""
    print(f"  {ranks}{fc.get_num_threads()} threads, {fc.get_isa()} kernels; {args.epochs} epochs, "
          f"batch {args.batch_size}{per_rank}, {type(optimizer).__name__} lr {args.lr:g} "
          f"({args.schedule}), seed {args.seed}")
    if resume_from is not None:
        print(f"  resuming from {checkpoint} after epoch {resume_from}")
    t0 = time.perf_counter()
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                        callbacks=[fc.CosineAnnealingLR(T_max=args.epochs)] if args.schedule == "cosine" else (),
                        verbose=0 if args.quiet else 1, checkpoint=fc.io.Checkpoint(checkpoint, {"fastcnn train": run}),
                        resume=args.resume)
    train_time = time.perf_counter() - t0
    result = model.evaluate(x_test, y_test)
    if world.rank == 0:
        fc.save(model, args.output)
        try:  # the run is complete and saved: its checkpoint has served
            os.unlink(checkpoint)
        except OSError:
            pass
    images = len(x) * max(len(history.epoch) - (resume_from or 0), 0)
    wall = time.perf_counter() - start
    print(f"test accuracy: {100 * result['accuracy']:.2f}% on {len(x_test):,} held-out digits "
          f"(loss {result['loss']:.4f})")
    print(f"speed: {images / max(train_time, 1e-9):,.0f} images/s training "
          f"({len(history.epoch) - (resume_from or 0)} epochs in {train_time:.1f} s); "
          f"wall time {wall:.1f} s")
    print(f"saved {args.output}; try: fastcnn predict {args.output} IMAGE.png|ARRAY.npy")
    if args.plot and world.rank == 0:
        try:
            fc.plot.history(history, args.plot)
        except (ImportError, OSError, ValueError) as exc:
            print(f"fastcnn train: cannot draw {args.plot} (the model is saved): {exc}",
                  file=sys.stderr)
            return 1
        print(f"training curves: {args.plot}")
    return 0


# --- predict ---------------------------------------------------------------------------------
def _load_inputs(path, input_shape, invert):
    """A batch (N, H, W, C) from a .npy array or an image file, scaled like the training data."""
    import numpy as np
    h, w, c = input_shape
    if path.lower().endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        arr = np.asarray(arr, dtype=np.float32)
        if c == 1 and arr.shape[-1] != 1 and arr.shape[-2:] == (h, w):
            arr = arr[..., None]
        if arr.shape == (h, w, c):
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (h, w, c):
            raise ValueError(f"{path}: expected an array of shape ({h}, {w}, {c}) or "
                             f"(N, {h}, {w}, {c}), got {arr.shape}")
        return arr
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"{path}: reading images needs Pillow (pip install pillow); "
                         f".npy arrays work without it") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the image: {exc}") from None
    arr = arr.reshape(1, h, w, c)
    if invert == "yes" or (invert == "auto" and c == 1 and arr.mean() > 0.5):
        arr = 1.0 - arr  # dark digit on a light background -> MNIST's light digit on black
    return arr


def _cmd_predict(args):
    import numpy as np

    import fastcnn as fc
    if args.threads:
        fc.set_num_threads(args.threads)
    try:
        model = fc.load(args.model)
    except (OSError, ValueError) as exc:
        print(f"fastcnn predict: {exc}", file=sys.stderr)
        return 2
    shape = getattr(model, "input_shape", None)
    if shape is None or len(shape) != 3:
        print(f"fastcnn predict: {args.model} does not record an image input shape",
              file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            x = _load_inputs(path, tuple(shape), args.invert)
        except (OSError, ValueError) as exc:
            print(f"fastcnn predict: {exc}", file=sys.stderr)
            status = 1
            continue
        probs = model.predict(x)
        for i, p in enumerate(probs):
            label = path if len(probs) == 1 else f"{path}[{i}]"
            k = int(np.argmax(p))
            print(f"{label}: class {k} (probability {float(p[k]):.3f})")
    return status


# --- explain and attack ----------------------------------------------------------------------
def _image_model(command, path):
    """(model, (H, W, C)) of a model file that takes images, or an error message."""
    import fastcnn as fc
    try:
        model = fc.load(path)
    except (OSError, ValueError) as exc:
        return None, f"fastcnn {command}: {exc}"
    shape = getattr(model, "input_shape", None)
    if shape is None and hasattr(model, "inputs") and len(model.inputs) == 1:
        shape = model.inputs[0].shape
    if shape is None or len(shape) != 3:
        return None, f"fastcnn {command}: {path} does not take images (H, W, C)"
    return model, tuple(shape)


_METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad", "ig", "occlusion")


def _cmd_explain(args):
    import numpy as np

    import fastcnn as fc
    from fastcnn import explain
    if args.threads:
        fc.set_num_threads(args.threads)
    model, shape = _image_model("explain", args.model)
    if model is None:
        print(shape, file=sys.stderr)
        return 2
    layer = args.layer
    if layer is not None and layer.lstrip("-").isdigit() and isinstance(model, fc.Sequential):
        layer = int(layer)
    try:
        x = _load_inputs(args.image, shape, args.invert)[:1]
        probs = model.predict(x)[0]
        target = int(np.argmax(probs)) if args.target is None else args.target
        if args.method in ("gradcam", "gradcam++"):
            fn = explain.grad_cam if args.method == "gradcam" else explain.grad_cam_plus_plus
            heat = fn(model, x, target, layer=layer, upsample=True)[0]
        elif args.method == "saliency":
            heat = explain.saliency(model, x, target)[0].max(axis=-1)
        elif args.method == "smoothgrad":
            heat = np.abs(explain.smoothgrad(model, x, target, samples=args.steps))[0].max(-1)
        elif args.method == "ig":
            attributions, delta = explain.integrated_gradients(model, x, target, steps=args.steps)
            heat = np.abs(attributions[0]).sum(axis=-1)
            print(f"integrated gradients: completeness gap {float(delta[0]):.2e} "
                  f"({args.steps} steps)")
        else:
            heat = explain.occlusion(model, x, target, window=args.window,
                                     stride=max(1, args.window // 2))[0]
    except (OSError, ValueError) as exc:
        print(f"fastcnn explain: {exc}", file=sys.stderr)
        return 2
    print(f"{args.image}: class {int(np.argmax(probs))} (probability "
          f"{float(np.max(probs)):.3f}); explaining class {target} with {args.method}")
    try:
        if args.output.lower().endswith(".npy"):
            np.save(args.output, heat.astype(np.float32))
        else:
            fc.plot.heatmap(x[0], heat, title=f"{args.method}, class {target}", path=args.output)
    except (ImportError, OSError, ValueError) as exc:
        print(f"fastcnn explain: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    print(f"saved {args.output}")
    return 0


def _cmd_attack(args):
    import time

    import numpy as np

    import fastcnn as fc
    if args.threads:
        fc.set_num_threads(args.threads)
    model, shape = _image_model("attack", args.model)
    if model is None:
        print(shape, file=sys.stderr)
        return 2
    try:
        if args.images:
            folder = fc.datasets.ImageFolder(args.images, shape[:2])
            x, y = (np.concatenate(p) for p in zip(*folder.loader(256).eval_batches()))
            source = f"{len(x)} images of {args.images}"
        else:
            _, (x, y) = (fc.datasets.load_mnist(args.data) if args.data else
                         fc.datasets.load_mnist(seed=args.seed))
            source = f"{len(x)} MNIST test digits"
        if args.limit:
            x, y = x[:args.limit], y[:args.limit]
        clip = None if args.no_clip else (0.0, 1.0)
        attack = (fc.attacks.FGSM(args.eps, clip=clip) if args.method == "fgsm" else
                  fc.attacks.PGD(args.eps, steps=args.steps, norm=args.norm, clip=clip,
                                 seed=args.seed))
        if not model.loss:
            model.compile(optimizer="sgd", loss="cross_entropy")
        clean = model.evaluate(x, y)["accuracy"]
        t0 = time.perf_counter()
        robust = model.evaluate(x, y, attack=attack)["accuracy"]
        seconds = time.perf_counter() - t0
    except (OSError, ValueError) as exc:
        print(f"fastcnn attack: {exc}", file=sys.stderr)
        return 2
    print(f"{attack!r} on {source}")
    print(f"clean accuracy:  {100 * clean:.2f}%")
    print(f"robust accuracy: {100 * robust:.2f}% (attacks made in {seconds:.1f} s)")
    if args.plot:
        try:
            fc.plot.adversarial_examples(model, x[:8], attack(model, x[:8], y[:8]), y[:8],
                                         path=args.plot)
        except (ImportError, OSError, ValueError) as exc:
            print(f"fastcnn attack: cannot draw {args.plot}: {exc}", file=sys.stderr)
            return 1
        print(f"examples: {args.plot}")
    return 0


# --- finetune --------------------------------------------------------------------------------
def _cmd_finetune(args):
    import os
    import time

    import fastcnn as fc
    from fastcnn import finetune
    if args.threads:
        fc.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        if args.model.lower().endswith(".onnx"):
            model = fc.onnx.load(args.model, layout="nhwc")   # the folder's batches are NHWC
        else:
            model = fc.load(args.model)
    except (OSError, ValueError, ImportError) as exc:
        print(f"fastcnn finetune: {exc}", file=sys.stderr)
        return 2
    shape = tuple(model.inputs[0].shape) if hasattr(model, "inputs") else model.input_shape
    if shape is None or len(shape) != 3 or shape[2] != 3:
        print(f"fastcnn finetune: {args.model} takes input of shape {shape}; fine-tuning on "
              f"images needs an RGB image model (H, W, 3)", file=sys.stderr)
        return 2
    size = (args.image_size, args.image_size) if args.image_size else shape[:2]
    if None in size:
        print(f"fastcnn finetune: {args.model} takes images of any size; give one with "
              f"--image-size", file=sys.stderr)
        return 2
    norm = {"imagenet": dict(mean="imagenet"), "none": {}}[args.normalize]
    try:
        train = fc.datasets.ImageFolder(args.folder, size, validation_split=args.validation_split,
                                        subset="training", seed=args.seed, **norm)
        held_out = fc.datasets.ImageFolder(args.folder, size,
                                           validation_split=args.validation_split,
                                           subset="validation", seed=args.seed, **norm)
        head = finetune.replace_classifier(model, len(train.classes))
    except (OSError, ValueError, ImportError) as exc:
        print(f"fastcnn finetune: {exc}", file=sys.stderr)
        return 2
    print(f"fastcnn {fc.__version__}: fine-tuning {os.path.basename(args.model)} on "
          f"{args.folder}: {len(train.classes)} classes ({', '.join(train.classes[:6])}"
          f"{', ...' if len(train.classes) > 6 else ''}), {len(train)} training / "
          f"{len(held_out)} held-out images of {size[0]}x{size[1]}")
    print(f"  new head {head.in_features} -> {head.out_features}; "
          f"{'every layer trains' if args.unfreeze else 'the rest is frozen'}; "
          f"{args.epochs} epochs, batch {args.batch_size}, {fc.get_num_threads()} threads")
    fc.manual_seed(args.seed)
    t0 = time.perf_counter()
    acc, _ = finetune.fine_tune(model, train, held_out, epochs=args.epochs,
                                unfreeze=args.unfreeze, lr=args.lr, batch_size=args.batch_size,
                                seed=args.seed, verbose=0 if args.quiet else 1)
    seconds = time.perf_counter() - t0
    print(f"held-out accuracy: {100 * acc:.1f}% on {len(held_out)} images "
          f"(chance: {100 / len(train.classes):.1f}%); trained in {seconds:.1f} s")
    output = args.output or os.path.splitext(os.path.basename(args.model))[0] + "_finetuned.onnx"
    try:
        if output.lower().endswith(".onnx"):
            fc.onnx.export(model, output, layout="nchw")
            how = "ONNX Runtime runs it (NCHW input)"
        else:
            fc.save(model, output)
            how = "fastcnn.load reads it"
    except (OSError, ValueError, ImportError) as exc:
        print(f"fastcnn finetune: cannot write {output}: {exc}", file=sys.stderr)
        return 1
    print(f"saved {output} ({how}); classes in order: {', '.join(train.classes)}; "
          f"wall time {time.perf_counter() - start:.1f} s")
    return 0


# --- bench -----------------------------------------------------------------------------------
def _find_compare():
    from pathlib import Path
    here = Path(__file__).resolve()
    for root in (Path.cwd(), here.parents[2]):
        candidate = root / "benchmarks" / "compare.py"
        if candidate.is_file():
            return candidate
    return None


def _cmd_bench(args):
    import subprocess
    script = _find_compare()
    if script is not None:
        return subprocess.call([sys.executable, str(script)] + list(args.args))
    try:  # an installed package carries the suite's engine without the benchmarks/ folder
        from fastcnn.benchmark import main as bench_main
    except ImportError:
        print("fastcnn bench: the benchmark suite is not installed yet (no benchmarks/compare.py "
              "in this checkout or the current folder).", file=sys.stderr)
        return 1
    return bench_main(list(args.args))


def build_parser():
    parser = argparse.ArgumentParser(prog="fastcnn", description="Fast CNNs on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, SIMD instruction set, OpenMP runtime, threads")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train LeNet-5 on MNIST (the bundled subset by default) and save it",
                       description="Train LeNet-5 on MNIST: by default the bundled 5,000-digit "
                                   "subset (4,000 train / 1,000 test); prints progress, test "
                                   "accuracy and speed, and saves the model.")
    d = TRAIN_DEFAULTS
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"passes over the data (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"default {d['batch_size']}")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"learning rate (default {d['lr']:g})")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=d["optimizer"],
                   help="adam (default), adamw, or sgd (Nesterov momentum 0.9)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d["schedule"],
                   help="learning rate: cosine decay to 0 over the epochs (default) or constant")
    p.add_argument("--threads", type=int, default=0, help="threads (default: OMP_NUM_THREADS or physical cores)")
    p.add_argument("--output", "-o", default="lenet5.fcnn", help="where to save the model (default lenet5.fcnn)")
    p.add_argument("--data", metavar="FOLDER", help="read the four MNIST IDX files from FOLDER instead")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"seed of initialisation, split and shuffling (default {d['seed']})")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="train on the first N training digits only")
    p.add_argument("--model", choices=("lenet5", "small_cnn"), default="lenet5", help="architecture (default lenet5)")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-epoch progress")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="where to save the training state after every epoch (default: the "
                        "output's name + .ckpt; deleted when the run completes)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint (same options); the "
                        "result is bit for bit that of an uninterrupted run")
    p.add_argument("--plot", metavar="PNG", help="draw the training curves into this PNG (needs matplotlib)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of mpiexec (pip install fastcnn[mpi]); "
                        "--batch-size is per rank")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="classify images (PNG/JPEG with Pillow) or .npy arrays",
                       description="Print the predicted class and its probability for each image.")
    p.add_argument("model", help="a model saved by fastcnn train or fastcnn.save")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".npy array (one image or a batch, NHWC or NHW) or an image file")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey-level images (auto: when mostly light, as a dark digit on paper)")
    p.add_argument("--threads", type=int, default=0, help="threads")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("explain", help="draw what an image's prediction rests on (Grad-CAM, saliency, ...)",
                       description="Explain a model's decision on one image and save the map over "
                                   "the image as a PNG (or the raw map as .npy).")
    p.add_argument("model", help="a model saved by fastcnn train or fastcnn.save")
    p.add_argument("image", help="an image file (PNG/JPEG with Pillow) or a .npy array")
    p.add_argument("--method", choices=_METHODS, default="gradcam", help="default gradcam")
    p.add_argument("--layer", help="Grad-CAM's layer: index in a Sequential, name or dotted "
                                   "path (default: the last Conv2d)")
    p.add_argument("--target", type=int, help="the class to explain (default: the predicted one)")
    p.add_argument("--steps", type=int, default=50, help="integrated gradients' steps, smoothgrad's samples (default 50)")
    p.add_argument("--window", type=int, default=4, help="occlusion window (default 4)")
    p.add_argument("--output", "-o", default="explanation.png", help="PNG (default explanation.png) or .npy")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey-level images (auto: when mostly light)")
    p.add_argument("--threads", type=int, default=0, help="threads")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("attack", help="clean and robust accuracy under FGSM or PGD",
                       description="Attack a classifier on test data and print its accuracy on "
                                   "clean and on adversarial inputs.")
    p.add_argument("model", help="a model saved by fastcnn train or fastcnn.save")
    p.add_argument("--eps", type=float, default=0.1, help="the perturbation's size (default 0.1)")
    p.add_argument("--method", choices=("fgsm", "pgd"), default="fgsm", help="default fgsm")
    p.add_argument("--steps", type=int, default=10, help="PGD's steps (default 10)")
    p.add_argument("--norm", choices=("inf", "2"), default="inf", help="PGD's ball (default inf)")
    p.add_argument("--data", metavar="FOLDER", help="MNIST IDX files (default: the bundled subset's test digits)")
    p.add_argument("--images", metavar="IMAGE_FOLDER", help="or a folder of images, one sub-folder per class")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="the first N samples only")
    p.add_argument("--no-clip", action="store_true", help="do not clip to [0, 1] (normalised inputs)")
    p.add_argument("--seed", type=int, default=0, help="split of the bundled subset, PGD's start")
    p.add_argument("--plot", metavar="PNG", help="draw 8 clean and attacked examples into this PNG")
    p.add_argument("--threads", type=int, default=0, help="threads")
    p.set_defaults(func=_cmd_attack)

    p = sub.add_parser("finetune", help="adapt a trained classifier (.onnx or .fcnn) to a folder of images",
                       description="Replace the classifier head of MODEL for the classes of "
                                   "IMAGE_FOLDER (one sub-folder per class, JPEG/PNG), train it "
                                   "on a frozen backbone (or all layers with --unfreeze), report "
                                   "the accuracy on held-out images and write the model.")
    p.add_argument("model", help="a classifier: an ONNX file (e.g. exported by PyTorch) or a .fcnn model")
    p.add_argument("folder", metavar="IMAGE_FOLDER", help="one sub-folder of images per class")
    p.add_argument("--epochs", type=int, default=5, help="passes over the images (default 5)")
    p.add_argument("--output", "-o", help="OUT.onnx (default: <model>_finetuned.onnx) or OUT.fcnn")
    p.add_argument("--unfreeze", action="store_true", help="train every layer, not only the new head")
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default 1e-3 for the head, 1e-4 unfrozen)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--validation-split", type=float, default=0.2, help="share of each class held out (default 0.2)")
    p.add_argument("--image-size", type=int, default=0, help="resize to this size (default: the model's input size)")
    p.add_argument("--normalize", choices=("imagenet", "none"), default="imagenet",
                   help="pixel normalisation the model expects: ImageNet's mean/std (default) or [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the head and shuffling")
    p.add_argument("--threads", type=int, default=0, help="threads")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("bench", help="run benchmarks/compare.py (fastcnn vs numpy vs PyTorch)",
                       description="Run the benchmark comparison, when the benchmark suite is present.")
    p.add_argument("args", nargs="*", help="options passed to compare.py as they are, e.g. "
                   "--shapes lenet-c1,res20-s1 --threads 1 (python benchmarks/compare.py --help)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv[1:]):
        return _cmd_bench(argparse.Namespace(args=argv[1:]))  # options go to compare.py as they are
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
