// CPU features that select kernel variants at run time.
#pragma once

#include <string>

namespace rwkv {

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 + FMA + F16C
  bool avx512 = false;    // AVX-512 F, BW, VL, DQ
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  // AMX tiles with int8 products, and the kernel's permission to use them (Linux grants the
  // 8 KB of tile state per process on request).
  bool amx_int8 = false;
  bool amx_bf16 = false;  // AMX tiles with bf16 products (and that permission)
  // Whether weights streamed once per token are best prefetched non-temporally (AMD): see
  // kernels/prefetch.h.
  bool prefetch_non_temporal = false;
};

// What this CPU supports (detected once).
const CpuFeatures& cpu_features();
std::string cpu_features_string();

}  // namespace rwkv
