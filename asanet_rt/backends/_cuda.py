"""Old import path of the CUDA helpers; they live in ``asanet_rt.backends.tensorrt_common`` (public) now."""
from .tensorrt_common import (MEMORY_BACKENDS, CudaApi, CudaPython, DeviceInfo, HostBuffer, PyCuda,  # noqa: F401
                              current_device_info, open_cuda)
