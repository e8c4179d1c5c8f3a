#include <string>

#include "cli.h"

namespace rwkv::cli {

namespace {
CLI::Validator lower_bound(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& input) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(input, value)) return "'" + input + "' is not a number";
        if (value > 0 || (zero_allowed && value == 0)) return "";
        return std::string(zero_allowed ? "must be zero or more" : "must be greater than zero") +
               ", got " + input;
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
}  // namespace

const CLI::Validator kPositive = lower_bound(false);
const CLI::Validator kNonNegative = lower_bound(true);

}  // namespace rwkv::cli
