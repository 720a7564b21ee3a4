"""LightningModules: the science of a task (loss, metrics, logging). Add yours here."""
