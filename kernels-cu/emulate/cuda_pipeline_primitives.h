// Stand-in for CUDA's asynchronous-copy primitives in the host emulation: cuda_shim.h implements
// __pipeline_memcpy_async, __pipeline_commit and __pipeline_wait_prior (copies deferred to the
// wait that covers them).
#pragma once
#include "cuda_shim.h"
