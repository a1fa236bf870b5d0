"""`python -m synthmed experiment=<name> [key=value ...]`: the one entry point of every experiment.

The configs live in the top-level conf/ and ship as the package synthmed.conf; Hydra finds them as
pkg://synthmed.conf, so this works the same from a checkout, an editable or a plain install, and any directory. `--cfg job` prints the composed config; `-m` starts a multirun (sweep).
"""

from synthmed.utils import pin_cpu_isa

pin_cpu_isa()  # before torch's first operation: the same numbers on hosts with and without AVX-512

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="pkg://synthmed.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from synthmed.run import run  # imported here so that `--help`/`--cfg` stay fast

    return run(cfg)


if __name__ == "__main__":
    main()
