#include "core/cpu.h"

namespace rwkv {

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    __builtin_cpu_init();
    f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
#if defined(__GNUC__) && __GNUC__ >= 12
    f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
#endif
    f.prefetch_non_temporal = __builtin_cpu_is("amd");
    return f;
  }();
  return features;
}

std::string cpu_features_string() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  if (f.avx2_fma) s += "avx2 fma ";
  if (f.avx512) s += "avx512 ";
  if (f.avx512_bf16) s += "avx512_bf16 ";
  if (f.avx512_vnni) s += "avx512_vnni ";
  if (!s.empty()) s.pop_back();
  return s.empty() ? "scalar" : s;
}

}  // namespace rwkv
