#!/usr/bin/env bash
# The README's pictures, made by the commands the README shows: bash docs/pictures/make.sh
set -euo pipefail
cd "$(dirname "$0")"
fastcnn train --quiet --plot curves.png
python3 -c "import fastcnn as fc, PIL.Image as I; _, (x, y) = fc.datasets.load_mnist(); I.fromarray((x[3, ..., 0] * 255).astype('uint8')).save('digit.png')"
fastcnn explain lenet5.fcnn digit.png --method gradcam --output gradcam.png
fastcnn attack lenet5.fcnn --eps 0.1 --plot adversarial.png
python3 - <<'PY'
import fastcnn as fc
model = fc.load("lenet5.fcnn")
_, (x, y) = fc.datasets.load_mnist()
fc.plot.filters(model, path="filters.png")
fc.plot.feature_maps(model, x[3], layer=0, path="feature_maps.png")
fc.plot.confusion_matrix(y, model.predict(x).argmax(axis=1), path="confusion.png")
PY
rm -f lenet5.fcnn digit.png
