// Errors raised at the library's edges (file readers, model building, the API).
// Messages are one line, name the file or tensor at fault and say what was expected.
#pragma once

#include <stdexcept>
#include <string>

namespace rwkv {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace rwkv
