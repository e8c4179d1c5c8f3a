#include "core/cpu.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace rwkv {

namespace {

// Linux keeps AMX tile data off until a process asks for it; the first tile instruction
// without that permission is SIGILL.
bool os_allows_amx() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

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
    const bool amx = f.avx512_vnni && __builtin_cpu_supports("amx-tile") && os_allows_amx();
    f.amx_int8 = amx && __builtin_cpu_supports("amx-int8");
    f.amx_bf16 = amx && f.avx512_bf16 && __builtin_cpu_supports("amx-bf16");
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
  if (f.amx_int8) s += "amx_int8 ";
  if (f.amx_bf16) s += "amx_bf16 ";
  if (!s.empty()) s.pop_back();
  return s.empty() ? "scalar" : s;
}

}  // namespace rwkv
