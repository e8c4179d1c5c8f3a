/* Compiled as C to prove include/rwkv/rwkv.h is valid C. */
#include "rwkv/rwkv.h"

size_t rwkv_c_header_check(const rwkv_model* model) { return rwkv_model_state_size(model); }
