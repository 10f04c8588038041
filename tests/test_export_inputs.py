"""The export stage picks its example/calibration tile from the same typed view the runtime reads (ModelInputs)."""
from __future__ import annotations

from asanet_rt.export.onnx_export import ExportOptions
from asanet_rt.metadata import ArchSpec, ModelMetadata


def test_export_options_inputs_match_the_written_section():
    meta = ModelMetadata.build(ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, 5), native_tile=512)
    assert ExportOptions(tile=(64, 128)).inputs(meta).default_tile == 128  # native 512 clipped to the range
    assert ExportOptions(tile=(1024, 2048)).inputs(meta).default_tile == 1024
    assert ExportOptions(tile=(256, 1024)).inputs(meta).default_tile == 512
    inputs = ExportOptions(input="normalized", batch=(2, 4), tile=(32, 256)).inputs(meta)
    assert inputs.kind == "normalized" and inputs.batch_range == (2, 4) and inputs.tile_range == (32, 256)
    assert inputs.optical_bands == meta.optical_channels
