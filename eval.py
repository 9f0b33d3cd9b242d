"""Evaluate a checkpoint: ``python eval.py ckpt_path=<run>/checkpoints/<file>.ckpt`` (see README)."""

import hydra

from brain_mri.config.launch import register, run_task
from brain_mri.tasks.evaluate import evaluate

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg):
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
