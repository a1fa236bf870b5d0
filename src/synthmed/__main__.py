"""`python -m synthmed experiment=<name> [key=value ...]` (or `synthmed ...`): the one entry point of every
experiment. `--cfg job` prints the composed config; `-m` starts a multirun (sweep). Two helpers share the
command: `synthmed report <sweep dir>` rebuilds a sweep's table, `synthmed dashboard <project>` lays out the
study's W&B workspace.

The configs live in the top-level conf/ and ship as the package synthmed.conf; Hydra finds them as
pkg://synthmed.conf, so this works the same from a checkout, an editable or a plain install, and any directory.
"""

import sys

from synthmed.utils import pin_cpu_isa

# before torch's first operation: the same numbers run after run (thread teams of a fixed size), and on hosts
# with and without AVX-512
pin_cpu_isa()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

SUBCOMMANDS = {"report": "synthmed.report", "dashboard": "synthmed.dashboard"}


@hydra.main(version_base="1.3", config_path="pkg://synthmed.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from synthmed.run import run  # imported here so that `--help`/`--cfg` stay fast

    return run(cfg)


def cli() -> int | None:
    """`synthmed report ...` and `synthmed dashboard ...` go to their module; anything else is an experiment."""
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:])
    return main()


if __name__ == "__main__":
    sys.exit(cli())
