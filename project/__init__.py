"""A LightningCLI training template: data/, networks/, models/, optim/, callbacks/, wired by cli.py."""
