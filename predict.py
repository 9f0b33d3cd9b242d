"""Predict new scans: ``python predict.py ckpt_path=<checkpoint or folder> input=<image or folder>``."""

import hydra

from brain_mri.config.launch import register, run_task
from brain_mri.tasks.predict import predict

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg):
    return run_task(predict, cfg)


if __name__ == "__main__":
    main()
