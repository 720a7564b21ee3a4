"""LightningDataModules. Add yours here; they know nothing of the model."""
