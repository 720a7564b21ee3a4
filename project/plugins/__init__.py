"""Lightning plugins the CLI installs: how checkpoints reach the disk."""
