"""The `c2c-hf` sub-commands that are not a tool package's own: `train` and `push`."""
