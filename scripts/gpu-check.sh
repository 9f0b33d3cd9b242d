#!/usr/bin/env bash
# What one CUDA GPU does with this project, in about 8 minutes; prints one JSON line and keeps the runs
# under outputs/gpu_check/<date>_<time>/ (GPU_CHECK_OUT: another parent). In the project's environment:
#   scripts/gpu-check.sh [data folder]   (default: ../shared/data/figshare_brain_tumor, else phantoms)
# 1. the training benchmark: the real pipeline over a bare PyTorch loop, images per second;
# 2. a 5-fold cross-validation of experiment=modern, the folds side by side on the one GPU (joblib):
#    its time and out-of-fold AUROC;
# 3. the five folds as one ensemble with flip views, evaluated on the test images (eval.py);
# 4. predict.py explain=true device=cuda on one class folder, Grad-CAM overlays included;
# 5. the ONNX export of fold 0 (export.py; the graph is exported on the CPU, as it always is).
# GPU_CHECK_EPOCHS (default 8) and GPU_CHECK_IMAGE_SIZE (128) set the folds' length and input size.
# GPU_CHECK_DEVICE=cpu runs every step on the CPU, tiny (phantoms, 32 px, 1 epoch, 2 folds): a check of
# the script itself where no GPU is lent.
set -euo pipefail
cd "$(dirname "$0")/.."

device=${GPU_CHECK_DEVICE:-cuda}
data=${1:-../shared/data/figshare_brain_tumor}
out=${GPU_CHECK_OUT:-outputs/gpu_check}/$(date +%Y-%m-%d_%H-%M-%S)
if [ "$device" = cuda ]; then
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "gpu-check: PyTorch sees no CUDA GPU here (GPU_CHECK_DEVICE=cpu checks the script)." >&2; exit 1; }
    folds=5 epochs=${GPU_CHECK_EPOCHS:-8} size=${GPU_CHECK_IMAGE_SIZE:-128}
    bench=(--steps 30) trainer=(trainer=gpu) jobs=5
else
    folds=2 epochs=1 size=32
    bench=(--steps 2 --warmup 1 --image-size 32 --batch-size 8 --ensemble 2 --precision 32-true)
    trainer=(trainer=cpu trainer.precision=32-true data.num_workers=0) jobs=2
fi
if [ -d "$data" ] && [ "$device" = cuda ]; then
    source=(data.root="$(realpath "$data")")
else
    source=(data=synthetic)  # phantoms, generated into data/synthetic
    data=data/synthetic
fi
mkdir -p "$out"
seconds() { python -c "import time; print(round(time.time() - $1, 1))"; }
now() { python -c "import time; print(time.time())"; }

start=$(now)
python -m brain_mri.bench "${bench[@]}" > "$out/bench.json" 2> "$out/bench.log"

cv_start=$(now)
python train.py -m experiment=modern "${source[@]}" "${trainer[@]}" data.image_size="$size" \
    trainer.max_epochs="$epochs" data.num_folds="$folds" data.fold="$(seq -s, 0 $((folds - 1)))" \
    gallery_images=0 hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" hydra.sweep.dir="$out/cv" \
    > "$out/cv.log" 2>&1
cv_seconds=$(seconds "$cv_start")
python -m brain_mri.report "$out/cv" --resamples 200 > "$out/report.log" 2>&1

ensemble_start=$(now)
python eval.py ckpt_path="$out/cv" eval.tta=flip "${trainer[@]:0:1}" hydra.run.dir="$out/ensemble" \
    > "$out/ensemble.log" 2>&1
ensemble_seconds=$(seconds "$ensemble_start")

images=$(find "$data" -mindepth 1 -maxdepth 1 -type d | sort | head -n 1)
predict_start=$(now)
python predict.py ckpt_path="$out/cv/0" input="$images" explain=true device="$device" progress=false \
    hydra.run.dir="$out/predict" > "$out/predict.log" 2>&1
predict_seconds=$(seconds "$predict_start")

export_start=$(now)
python export.py ckpt_path="$out/cv/0" format=onnx hydra.run.dir="$out/export" > "$out/export.log" 2>&1
export_seconds=$(seconds "$export_start")

python - "$out" "$device" "$cv_seconds" "$ensemble_seconds" "$predict_seconds" "$export_seconds" \
    "$(seconds "$start")" << 'EOF'
import csv, json, sys
from pathlib import Path

out, device = Path(sys.argv[1]), sys.argv[2]
cv_s, ensemble_s, predict_s, export_s, total_s = map(float, sys.argv[3:])
bench = json.loads((out / "bench.json").read_text())
oof = json.loads((out / "cv" / "report" / "best.json").read_text())["out_of_fold"]
ensemble = json.loads((out / "ensemble" / "metrics.json").read_text())
with open(out / "predict" / "predictions.csv", newline="") as rows:
    predicted = sum(1 for _ in csv.DictReader(rows))
(onnx,) = (out / "export").glob("*.onnx")
print(json.dumps({
    "device": bench["device"],
    "bench": {k: bench[k] for k in ("pipeline_img_s", "bare_loop_img_s", "pipeline_over_bare", "precision")},
    "cv": {"seconds": cv_s, "oof_auroc": oof["auroc/estimate"], "oof_accuracy": oof["accuracy/estimate"]},
    "ensemble_flip": {"seconds": ensemble_s, "test/auroc": ensemble["test/auroc"],
                      "test/accuracy": ensemble["test/accuracy"]},
    "predict_explain": {"device": device, "images": predicted, "seconds": predict_s,
                        "img_s": round(predicted / predict_s, 1)},
    "onnx_export": {"seconds": export_s, "megabytes": round(onnx.stat().st_size / 2**20, 1)},
    "total_seconds": total_s,
    "folder": str(out),
}))
EOF
