"""Train a brain MRI classifier: ``python train.py [overrides]`` (see README and conf/train.yaml)."""

import hydra

from brain_mri.config.launch import register, run_task
from brain_mri.tasks.train import train

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg):
    return run_task(train, cfg)


if __name__ == "__main__":
    main()
