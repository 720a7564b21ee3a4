"""Trainer callbacks of the template."""
