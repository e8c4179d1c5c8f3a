/* Plain C API for bindings (Python ctypes, Go, Rust, ...). Mirrors rwkv::Model of model.h.
 *
 * Functions that can fail return NULL or -1; rwkv_last_error() then gives a one-line message
 * for the calling thread. A model may be shared between threads; each thread (sequence) owns
 * its state and logits buffers. */
#ifndef RWKV_RWKV_H
#define RWKV_RWKV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rwkv_model rwkv_model;

/* Loads a .pth, .safetensors or rwkv.cpp .bin file. `arch` may be NULL (detect) or one of
 * "4", "5.0", "5.1", "5.2", "6", "7"; `ln_x_eps` <= 0 keeps the file's convention. */
rwkv_model* rwkv_model_load(const char* path, const char* arch, float ln_x_eps);
/* As rwkv_model_load, with RWKV_LOAD_* flags or'ed together (0: none; unknown bits fail).
 * RWKV_LOAD_INT8_ACTIVATIONS: for weights in ggml blocks, round each matrix product's input to
 * int8 per 32 values and use integer dot products, as `rwkv --int8-activations` (README); with
 * AVX-512 VNNI the weights repacked for that go to the repack cache in $RWKV_CACHE_DIR, else
 * $XDG_CACHE_HOME/rwkv or ~/.cache/rwkv, and later loads read them from there into huge pages.
 * RWKV_LOAD_MAP_REPACK_CACHE: map that cache instead (`rwkv --map-repack-cache`): faster loads,
 * 2-12% slower generation. */
#define RWKV_LOAD_INT8_ACTIVATIONS 1u
#define RWKV_LOAD_MAP_REPACK_CACHE 2u
rwkv_model* rwkv_model_load_flags(const char* path, const char* arch, float ln_x_eps,
                                  unsigned flags);
void rwkv_model_free(rwkv_model* model);

/* "4", "5.0", "5.1", "5.2", "6.0" or "7.0"; valid while the model lives. */
const char* rwkv_model_version(const rwkv_model* model);
int rwkv_model_n_vocab(const rwkv_model* model);
int rwkv_model_n_layer(const rwkv_model* model);
int rwkv_model_n_embd(const rwkv_model* model);
/* Number of floats in a state. */
size_t rwkv_model_state_size(const rwkv_model* model);

/* Writes the initial state into `state` (state_size floats). */
void rwkv_model_init_state(const rwkv_model* model, float* state);
/* Feeds one token: updates `state` in place and writes n_vocab floats to `logits`.
 * Returns 0, or -1 (e.g. a token outside the vocabulary). */
int rwkv_model_forward(const rwkv_model* model, int token, float* state, float* logits);

/* The last error on this thread, or "" if none. */
const char* rwkv_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* RWKV_RWKV_H */
