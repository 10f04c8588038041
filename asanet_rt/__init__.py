"""asanet-rt: ASANet (RGB + SAR land-cover segmentation) from official checkpoints to fast, georeferenced maps.

Importing this package pulls numpy only. The export stage (``asanet_rt.export``, torch) and the engine stage
(``asanet_rt.engines``, TensorRT) are imported explicitly by whoever needs them.
"""
from ._version import __version__
from .metadata import ArchSpec, DatasetPreset, MetadataError, ModelMetadata, PRESETS

__all__ = ["__version__", "ArchSpec", "DatasetPreset", "MetadataError", "ModelMetadata", "PRESETS"]
