// Data-parallel training across processes: a thin wrapper over MPI (OpenMPI from Debian) when
// the build found it and the process was started by mpirun; otherwise one process of one.
#pragma once

#include <cstddef>

namespace rwkv::train {

class Mpi {
 public:
  // Initialises MPI on first use if the process was launched by mpirun. Throws rwkv::Error when
  // it was but the build has no MPI.
  static Mpi& instance();
  ~Mpi();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Sums `n` doubles over all processes, in place (the same result on every process).
  void all_reduce_sum(double* values, size_t n);
  void barrier();

 private:
  Mpi();
  int rank_ = 0, size_ = 1;
  bool initialized_ = false;
};

}  // namespace rwkv::train
