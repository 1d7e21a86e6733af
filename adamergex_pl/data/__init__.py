"""Data: where records come from (:mod:`.sources`: local files and hub datasets) and how prompts are written
(:mod:`.templates`). The LightningDataModules built on them are in the top-level ``data_modules`` package."""
