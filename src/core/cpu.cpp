#include "core/cpu.h"

#include <cpuid.h>

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

// CPUID leaf 7 bits that __builtin_cpu_supports does not name in every compiler (clang 14 knows
// neither avx512bf16 nor the AMX features, so a clang build saw none of them).
struct Leaf7 {
  bool avx512_bf16 = false, amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

Leaf7 leaf7() {
  Leaf7 l;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return l;
  l.amx_bf16 = (d >> 22) & 1;
  l.amx_tile = (d >> 24) & 1;
  l.amx_int8 = (d >> 25) & 1;
  if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) l.avx512_bf16 = (a >> 5) & 1;
  return l;
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
    const Leaf7 leaf = leaf7();
    f.avx512_bf16 = f.avx512 && leaf.avx512_bf16;
    const bool amx = f.avx512_vnni && leaf.amx_tile && os_allows_amx();
    f.amx_int8 = amx && leaf.amx_int8;
    f.amx_bf16 = amx && f.avx512_bf16 && leaf.amx_bf16;
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
