"""Layers of a built engine from TensorRT's engine inspector (``inspect --layers``, DLA placement after a build)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def inspector_layers(trt: Any, engine: Any) -> list[Any]:
    """One entry per engine layer (a dict with Name, LayerType, ... when the engine kept detailed layer info)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line for line in str(text).splitlines() if line.strip()]
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    return list(layers)


def on_dla(layer: Any) -> bool:
    """Whether an inspector entry ran on a DLA core (TensorRT marks DLA subgraphs in the layer type/tactic)."""
    if isinstance(layer, dict):
        fields = (layer.get("LayerType"), layer.get("TacticName"), layer.get("Origin"))
        return any("dla" in str(f).lower() for f in fields if f)
    return "dla" in str(layer).lower()


def dla_layers_from_log(messages: list[str]) -> list[str] | None:
    """Layer names TensorRT's builder reports under "Layers running on DLA" (its INFO log after a DLA build:
    ``{conv1,bn1}, {conv2}``, one brace group per DLA subgraph); None when the log has no such section."""
    text = "\n".join(messages)
    start = text.find("Layers running on DLA")
    if start < 0:
        return None
    section = text[start + len("Layers running on DLA"):]
    end = section.find("Layers running on GPU")
    section = section[:end] if end >= 0 else section
    names: list[str] = []
    for group in re.findall(r"\{([^{}]*)\}", section):
        names += [name.strip() for name in group.split(",") if name.strip()]
    return names


def engine_layers(path: Path, allow_host_code: bool = False) -> list[Any]:
    """Deserialise the engine file at ``path`` (same TensorRT version and GPU as the build) and list its layers."""
    from asanet_rt.backends.tensorrt_common import (allow_host_code as decide_host_code, create_runtime,
                                                     current_device_info, engine_digests, import_runtime,
                                                     register_engine_plugins, shared_logger)
    from asanet_rt.engine_file import check_compatible, read_engine
    from asanet_rt.errors import AsanetError

    info, plan = read_engine(path)
    host_code = decide_host_code(info, path, allowed=allow_host_code, digests=engine_digests(path, plan))
    trt = import_runtime(info.backend, None, path,
                         version_compatible=bool(info.compatibility.get("version_compatible")))
    device = current_device_info(0)
    if device is None:
        raise AsanetError(f"{path}: --layers deserialises the engine, which needs a GPU (and cuda-python or "
                          f"pycuda to check it first); the rest of inspect works without")
    check_compatible(info, trt.__version__, device.compute_capability, backend=info.backend, path=path)
    register_engine_plugins(trt, info.plugins, path)
    logger = shared_logger(trt)  # TensorRT keeps the first logger of the process: never make a second one
    logger.errors.clear()
    runtime = create_runtime(trt, logger)
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = host_code
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        detail = "; ".join(logger.errors[-3:]) or "no message from TensorRT"
        raise AsanetError(f"{path}: TensorRT could not deserialise the engine ({detail})")
    return inspector_layers(trt, engine)
