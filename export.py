"""Export a checkpoint for serving: ``python export.py ckpt_path=<run>/checkpoints/<file>.ckpt format=onnx``
(see README and conf/export.yaml)."""

import hydra

from brain_mri.config.launch import register, run_task
from brain_mri.tasks.export import export

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg):
    return run_task(export, cfg)


if __name__ == "__main__":
    main()
