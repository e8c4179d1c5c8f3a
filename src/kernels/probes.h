// Machine probes for `rwkv bench`: the memory read bandwidth and the float32 FMA peak that
// generation and prefill speeds are measured against.
#pragma once

#include <cstddef>

#include "rwkv/thread_pool.h"

namespace rwkv::kernels {

// GB/s reading a buffer of `bytes` (much larger than the caches, in huge pages) on every thread
// of `pool`; the median of `runs` passes.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30, int runs = 5);
// GFLOP/s of float32 FMAs from registers on every thread of `pool` (2 flops per lane).
double measure_fma_peak(ThreadPool& pool);

}  // namespace rwkv::kernels
