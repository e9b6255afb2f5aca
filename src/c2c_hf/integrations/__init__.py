"""Bridges between C2C models and other tools: lm-evaluation-harness (`lm_eval`), and the fusers the C2C authors
released (`rosetta`)."""
