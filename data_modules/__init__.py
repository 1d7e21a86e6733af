"""LightningDataModules of adamergex-pl and the small pieces they share."""

from data_modules.base import TokenizedDataModule
from data_modules.crossin import CrossInDataModule
from data_modules.crossx import CrossXDataModule
from data_modules.instruction import InstructionDataModule
from data_modules.reference_lm import ReferenceLMDataModule
from data_modules.sources import DataSource
from data_modules.task import TaskDataModule

__all__ = [
    "CrossInDataModule",
    "CrossXDataModule",
    "DataSource",
    "InstructionDataModule",
    "ReferenceLMDataModule",
    "TaskDataModule",
    "TokenizedDataModule",
]
