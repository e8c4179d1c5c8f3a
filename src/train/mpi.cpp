#include "train/mpi.h"

#include <cstdlib>
#include <string>

#include "rwkv/error.h"

#ifdef RWKV_HAVE_MPI
// The C API only (OpenMPI's header would otherwise pull in its C++ bindings).
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace rwkv::train {

namespace {
// The world size mpirun announces (OpenMPI, or PMI-based launchers), 0 when not under mpirun.
int launcher_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}
}  // namespace

Mpi& Mpi::instance() {
  static Mpi mpi;
  return mpi;
}

Mpi::Mpi() {
  if (launcher_size() <= 1) return;
#ifdef RWKV_HAVE_MPI
  MPI_Init(nullptr, nullptr);
  initialized_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
#else
  throw Error("started by mpirun with " + std::to_string(launcher_size()) +
              " processes, but this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}

Mpi::~Mpi() {
#ifdef RWKV_HAVE_MPI
  if (initialized_) MPI_Finalize();
#endif
}

void Mpi::all_reduce_sum(double* values, size_t n) {
#ifdef RWKV_HAVE_MPI
  if (initialized_) MPI_Allreduce(MPI_IN_PLACE, values, int(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
  (void)values;
  (void)n;
#endif
}

void Mpi::barrier() {
#ifdef RWKV_HAVE_MPI
  if (initialized_) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

}  // namespace rwkv::train
