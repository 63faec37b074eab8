"""fastcnn predict: classes of images or arrays."""
import sys

from .inputs import load_inputs


def run(args):
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
            x = load_inputs(path, tuple(shape), args.invert)
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


def add_parser(sub):
    p = sub.add_parser("predict", help="classify images (PNG/JPEG with Pillow) or .npy arrays",
                       description="Print the predicted class and its probability for each image.")
    p.add_argument("model", help="a model saved by fastcnn train or fastcnn.save")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".npy array (one image or a batch, NHWC or NHW) or an image file")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey-level images (auto: when mostly light, as a dark digit on paper)")
    p.add_argument("--threads", type=int, default=0, help="threads")
    p.set_defaults(func=run)
