// Stand-in for CUDA's header in the host emulation (see cuda_shim.h).
#pragma once
#include "cuda_shim.h"
