// The plain C API of include/rwkv/rwkv.h: a thin wrapper that turns exceptions into return codes
// and a thread-local message.
#include "rwkv/rwkv.h"

#include <string>

#include "rwkv/model.h"

struct rwkv_model {
  std::unique_ptr<rwkv::Model> model;
};

namespace {
thread_local std::string last_error;

template <typename F>
auto guarded(F f, decltype(f()) on_error) -> decltype(f()) {
  try {
    last_error.clear();
    return f();
  } catch (const std::exception& e) {
    last_error = e.what();
    return on_error;
  }
}
}  // namespace

extern "C" {

rwkv_model* rwkv_model_load_flags(const char* path, const char* arch, float ln_x_eps,
                                  unsigned flags) {
  return guarded(
      [&]() -> rwkv_model* {
        if (!path) throw rwkv::Error("rwkv_model_load: path is NULL");
        if (flags & ~(RWKV_LOAD_INT8_ACTIVATIONS | RWKV_LOAD_MAP_REPACK_CACHE))
          throw rwkv::Error("rwkv_model_load_flags: unknown flags " + std::to_string(flags));
        rwkv::LoadOptions options;
        if (arch) options.version = arch;
        if (ln_x_eps > 0) options.ln_x_eps = ln_x_eps;
        options.int8_activations = (flags & RWKV_LOAD_INT8_ACTIVATIONS) != 0;
        options.map_repack_cache = (flags & RWKV_LOAD_MAP_REPACK_CACHE) != 0;
        return new rwkv_model{rwkv::Model::load(path, options)};
      },
      nullptr);
}

rwkv_model* rwkv_model_load(const char* path, const char* arch, float ln_x_eps) {
  return rwkv_model_load_flags(path, arch, ln_x_eps, 0);
}

void rwkv_model_free(rwkv_model* model) { delete model; }

const char* rwkv_model_version(const rwkv_model* m) { return m->model->info().version.c_str(); }
int rwkv_model_n_vocab(const rwkv_model* m) { return m->model->info().n_vocab; }
int rwkv_model_n_layer(const rwkv_model* m) { return m->model->info().n_layer; }
int rwkv_model_n_embd(const rwkv_model* m) { return m->model->info().n_embd; }
size_t rwkv_model_state_size(const rwkv_model* m) { return m->model->state_size(); }

void rwkv_model_init_state(const rwkv_model* m, float* state) {
  m->model->init_state({state, m->model->state_size()});
}

int rwkv_model_forward(const rwkv_model* m, int token, float* state, float* logits) {
  return guarded(
      [&] {
        m->model->forward(token, {state, m->model->state_size()},
                          {logits, size_t(m->model->info().n_vocab)});
        return 0;
      },
      -1);
}

const char* rwkv_last_error(void) { return last_error.c_str(); }

}  // extern "C"
