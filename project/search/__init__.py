"""Hyperparameter search over the CLI's own flags with Optuna: ``python -m project.search --help``."""
