"""fastcnn explain: a heat map of what one prediction rests on."""
import sys

from .inputs import image_model, load_inputs

_METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad", "ig", "occlusion")


def run(args):
    import numpy as np

    import fastcnn as fc
    from fastcnn import explain
    if args.threads:
        fc.set_num_threads(args.threads)
    try:
        model, shape = image_model(args.model)
    except (OSError, ValueError) as exc:
        print(f"fastcnn explain: {exc}", file=sys.stderr)
        return 2
    layer = args.layer
    if layer is not None and layer.lstrip("-").isdigit() and isinstance(model, fc.Sequential):
        layer = int(layer)
    try:
        x = load_inputs(args.image, shape, args.invert)[:1]
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


def add_parser(sub):
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
    p.set_defaults(func=run)
