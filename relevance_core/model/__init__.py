"""The two-tower retrieval model: towers, loss, streaming data, Lightning module, training,
TorchScript export. Importing this package pulls in torch and Lightning only (no Spark, Dagster or FAISS),
so the GPU check can run it on a machine with just those installed."""

from relevance_core.model.config import TwoTowerConfig

__all__ = ["TwoTowerConfig"]
