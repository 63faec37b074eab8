"""fastcnn finetune: a classifier adapted to a folder of images, written as ONNX."""
import sys


def run(args):
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


def add_parser(sub):
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
    p.set_defaults(func=run)
