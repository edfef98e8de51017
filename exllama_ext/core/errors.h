// Error types of the core. Bindings map ConfigError to pntk.ConfigError (a ValueError)
// and std::invalid_argument to ValueError; the CLI prints
//   pntk: error: <file>: <field>: <message>
#pragma once
#include <stdexcept>
#include <string>

namespace pntk {

// Invalid config.json (or config dict): names the file and the field at fault.
class ConfigError : public std::invalid_argument {
 public:
  ConfigError(std::string file, std::string field, std::string message)
      : std::invalid_argument(file + ": " + field + ": " + message),
        file_(std::move(file)), field_(std::move(field)), message_(std::move(message)) {}
  const std::string& file() const { return file_; }
  const std::string& field() const { return field_; }
  const std::string& message() const { return message_; }

 private:
  std::string file_, field_, message_;
};

// Bad argument to a kernel entry point: "<argument>: <message>".
[[noreturn]] inline void fail_argument(const char* argument, const std::string& message) {
  throw std::invalid_argument(std::string(argument) + ": " + message);
}

}  // namespace pntk

// PNTK_CHECK(cond, "scales", "must be fp16") throws std::invalid_argument("scales: must be fp16").
#define PNTK_CHECK(cond, argument, message)                  \
  do {                                                       \
    if (!(cond)) ::pntk::fail_argument((argument), (message)); \
  } while (0)
