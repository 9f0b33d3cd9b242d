"""Export a checkpoint for serving without this package:
``python -m brain_mri.export ckpt_path=<ckpt> format=onnx|torchscript [output=<file>]``.

The exported network takes what ``BrainMRIClassifier.forward`` takes, a float (N, 3, size, size) batch in
[0, 1] with any N, and returns the same logits (normalisation included). The input contract (class names,
image size, crop) travels with the file: ONNX metadata properties, or ``contract.json`` in TorchScript.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from brain_mri.checkpoints import load_checkpoint, restore_classifier
from brain_mri.errors import BrainMRIError, stop
from brain_mri.run_outputs import best_checkpoints

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def input_contract(model) -> dict:
    hp = model.hparams
    return {
        "class_names": list(hp.class_names),
        "image_size": hp.image_size,
        "crop": hp.get("crop", "none"),
        "input": "float32 (N, 3, image_size, image_size) in [0, 1], the grayscale repeated 3 times",
        "output": "logits (N, classes); softmax gives the class probabilities",
    }


def export(ckpt_path: str | Path, format: str = "onnx", output: str | Path | None = None) -> Path:
    """Write the exported model; returns its path (default: ``<checkpoint name>.onnx`` / ``.pt`` in the
    current folder, never inside a run folder). ``ckpt_path`` may be a run folder: its best checkpoint."""
    if format not in FORMATS:
        raise BrainMRIError(f"format must be one of {', '.join(FORMATS)}, got '{format}'.")
    checkpoints = best_checkpoints(ckpt_path)
    if len(checkpoints) > 1:
        raise BrainMRIError(
            f"{ckpt_path} holds {len(checkpoints)} runs: export one checkpoint or run folder."
        )
    ckpt_path = checkpoints[0]
    model = restore_classifier(load_checkpoint(ckpt_path)).eval()
    contract = input_contract(model)
    if not contract["image_size"]:
        raise BrainMRIError(f"{ckpt_path} does not record its image size: was it written by train.py?")
    target = Path(output) if output else Path(Path(ckpt_path).stem + FORMATS[format])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return write(model, contract, format, target)
    except (OSError, RuntimeError) as err:  # a folder, a missing or read-only place: said, not traced
        raise BrainMRIError(f"Cannot write {target}: {err}") from err


def write(model, contract: dict, format: str, target: Path) -> Path:
    """The traced network, taking a batch of any size, with the contract inside the file."""
    example = torch.rand(2, 3, contract["image_size"], contract["image_size"])
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's own notice
            traced = model.to_torchscript(method="trace", example_inputs=example)  # Lightning's, jit-safe
        torch.jit.save(traced, str(target), _extra_files={"contract.json": json.dumps(contract)})
        return target
    try:
        import onnx
    except ImportError as err:
        raise BrainMRIError("ONNX export needs the export extra: pip install -e '.[export]'") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter: no onnxscript
        torch.onnx.export(
            model,
            (example,),
            str(target),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    exported = onnx.load(str(target))
    for key, value in contract.items():
        exported.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(exported, str(target))
    return target


def main(argv: list[str] | None = None) -> None:
    settings: dict[str, str] = {"format": "onnx"}
    for item in sys.argv[1:] if argv is None else argv:
        key, _, value = item.partition("=")
        if key not in ("ckpt_path", "format", "output") or not value:
            print(
                f"Error: expected ckpt_path=<file> [format=onnx|torchscript] [output=<file>], got {item!r}.",
                file=sys.stderr,
            )
            sys.exit(2)
        settings[key] = value
    try:
        if "ckpt_path" not in settings:
            raise BrainMRIError("ckpt_path=<checkpoint> is required.")
        print(f"Wrote {export(settings['ckpt_path'], settings['format'], settings.get('output'))}")
    except BrainMRIError as err:
        stop(err)


if __name__ == "__main__":
    main()
