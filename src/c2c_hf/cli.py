"""`python -m c2c_hf.cli`: the `c2c-hf` command line (`c2c_hf_cli`, the light console entry that lists and dispatches
the sub-commands), for launchers that take a module (`torchrun -m`, `accelerate launch -m`)."""

from __future__ import annotations

from c2c_hf_cli import COMMANDS, main

__all__ = ["COMMANDS", "main"]

if __name__ == "__main__":
    main()
