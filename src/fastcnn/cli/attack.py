"""fastcnn attack: clean and robust accuracy under FGSM or PGD."""
import sys

from .inputs import image_model


def run(args):
    import time

    import numpy as np

    import fastcnn as fc
    if args.threads:
        fc.set_num_threads(args.threads)
    try:
        model, shape = image_model(args.model)
    except (OSError, ValueError) as exc:
        print(f"fastcnn attack: {exc}", file=sys.stderr)
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


def add_parser(sub):
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
    p.set_defaults(func=run)
