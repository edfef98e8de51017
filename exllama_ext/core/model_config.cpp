#include "core/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace pntk {
namespace {

using json = nlohmann::json;

// Typed access to one JSON object; every failure names `source` and the dotted field path.
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string prefix)
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw ConfigError(source_, path(key), message);
  }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  // A key that is absent or null reads as nullopt.
  const json* find(const std::string& key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<double> number(const std::string& key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    if (!value->is_number()) fail(key, "must be a number, got " + type_name(*value));
    const double x = value->get<double>();
    if (!std::isfinite(x)) fail(key, "must be finite");
    return x;
  }

  // Integers may be written as 4096 or 4096.0; anything else is an error.
  std::optional<int64_t> integer(const std::string& key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    if (value->is_number_unsigned()) {
      if (value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(key, "is out of range");
      return static_cast<int64_t>(value->get<uint64_t>());
    }
    if (value->is_number_integer()) return value->get<int64_t>();
    if (value->is_number_float()) {
      const double x = value->get<double>();
      if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9.0e15) return static_cast<int64_t>(x);
      fail(key, "must be an integer, got " + value->dump());
    }
    fail(key, "must be an integer, got " + type_name(*value));
  }

  std::optional<bool> boolean(const std::string& key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    if (!value->is_boolean()) fail(key, "must be true or false, got " + type_name(*value));
    return value->get<bool>();
  }

  std::optional<std::string> string(const std::string& key) const {
    const json* value = find(key);
    if (!value) return std::nullopt;
    if (!value->is_string()) fail(key, "must be a string, got " + type_name(*value));
    return value->get<std::string>();
  }

  std::vector<double> number_list(const std::string& key) const {
    const json* value = find(key);
    if (!value) return {};
    if (!value->is_array()) fail(key, "must be a list of numbers, got " + type_name(*value));
    std::vector<double> out;
    for (size_t i = 0; i < value->size(); ++i) {
      const json& item = (*value)[i];
      if (!item.is_number() || !std::isfinite(item.get<double>()))
        fail(key + "[" + std::to_string(i) + "]", "must be a finite number");
      out.push_back(item.get<double>());
    }
    return out;
  }

  double positive(const std::string& key, double x) const {
    if (!(x > 0)) fail(key, "must be positive, got " + format(x));
    return x;
  }
  int64_t positive(const std::string& key, int64_t x) const {
    if (x <= 0) fail(key, "must be positive, got " + std::to_string(x));
    return x;
  }

  static std::string type_name(const json& value) {
    if (value.is_string()) return "a string";
    if (value.is_boolean()) return "a boolean";
    if (value.is_array()) return "a list";
    if (value.is_object()) return "an object";
    if (value.is_number()) return "a number";
    return value.type_name();
  }
  static std::string format(double x) {
    std::ostringstream out;
    out.precision(10);
    out << x;
    return out.str();
  }

 private:
  const json& object_;
  std::string source_;
  std::string prefix_;
};


// "line L, column C" of a byte offset (1-based, as editors count).
std::string line_column(const std::string& text, size_t byte) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// The part of a nlohmann message after "syntax error while parsing value - ".
// nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error while
// parsing value - unexpected '}'" becomes "invalid JSON: unexpected '}'".
std::string parse_error_message(const std::string& what) {
  std::string message = what;
  const auto bracket = message.find("] ");
  if (!message.empty() && message[0] == '[' && bracket != std::string::npos) message = message.substr(bracket + 2);
  const auto dash = message.find(" - ");
  if (dash != std::string::npos) message = message.substr(dash + 3);
  return "invalid JSON: " + message;
}

// `root` is the config (prefix "") or the pntk_export record (prefix "pntk_export.").
// One rope_scaling / rope_parameters object (`it`, non-null) named `key` in error messages.
std::optional<RopeScalingFields> read_scaling_object(json::const_iterator it, const std::string& source,
                                                     const std::string& key) {
  if (!it->is_object()) throw ConfigError(source, key, "must be an object or null, got " + FieldReader::type_name(*it));
  FieldReader fields(*it, source, key);
  for (auto item = it->begin(); item != it->end(); ++item) {
    if (item.value().is_object())
      fields.fail(item.key(), "per-layer RoPE parameters are not supported (Llama uses one set)");
  }

  const auto type = fields.string("type");
  const auto rope_type = fields.string("rope_type");
  if (type && rope_type && *type != *rope_type)
    fields.fail("type", "\"" + *type + "\" disagrees with rope_type \"" + *rope_type + "\"");
  RopeScalingFields scaling;
  scaling.key = key;
  scaling.type = rope_type ? *rope_type : type ? *type : "default";
  if (scaling.type == "default" || scaling.type == "none") return std::nullopt;

  scaling.factor = fields.number("factor");
  if (scaling.factor && *scaling.factor < 1.0)
    fields.fail("factor", "must be >= 1 (a RoPE scaling factor below 1 shrinks the context), got " +
                              FieldReader::format(*scaling.factor));
  scaling.original_max_position_embeddings = fields.integer("original_max_position_embeddings");
  if (scaling.original_max_position_embeddings)
    fields.positive("original_max_position_embeddings", *scaling.original_max_position_embeddings);
  scaling.attention_factor = fields.number("attention_factor");
  if (scaling.attention_factor) fields.positive("attention_factor", *scaling.attention_factor);
  scaling.mscale = fields.number("mscale");
  scaling.mscale_all_dim = fields.number("mscale_all_dim");
  scaling.beta_fast = fields.number("beta_fast");
  if (scaling.beta_fast) fields.positive("beta_fast", *scaling.beta_fast);
  scaling.beta_slow = fields.number("beta_slow");
  if (scaling.beta_slow) fields.positive("beta_slow", *scaling.beta_slow);
  scaling.truncate = fields.boolean("truncate");
  scaling.low_freq_factor = fields.number("low_freq_factor");
  if (scaling.low_freq_factor) fields.positive("low_freq_factor", *scaling.low_freq_factor);
  scaling.high_freq_factor = fields.number("high_freq_factor");
  if (scaling.high_freq_factor) fields.positive("high_freq_factor", *scaling.high_freq_factor);
  scaling.long_factor = fields.number_list("long_factor");
  scaling.short_factor = fields.number_list("short_factor");
  return scaling;
}

std::string scaling_summary(const std::optional<RopeScalingFields>& scaling) {
  if (!scaling) return "no scaling";
  std::string out = "type " + scaling->type;
  if (scaling->factor) out += ", factor " + FieldReader::format(*scaling->factor);
  if (scaling->original_max_position_embeddings)
    out += ", original_max_position_embeddings " + std::to_string(*scaling->original_max_position_embeddings);
  return out;
}

// Transformers 5 writes rope_parameters; earlier versions rope_scaling. When a file has both
// (an edit of one after a Transformers 5 save), they must say the same thing.
std::optional<RopeScalingFields> read_scaling(const json& root, const std::string& source,
                                              const std::string& prefix = "") {
  const auto parameters = root.find("rope_parameters");
  const auto legacy = root.find("rope_scaling");
  const bool has_parameters = parameters != root.end() && !parameters->is_null();
  const bool has_legacy = legacy != root.end() && !legacy->is_null();
  if (!has_parameters) return has_legacy ? read_scaling_object(legacy, source, prefix + "rope_scaling") : std::nullopt;
  auto scaling = read_scaling_object(parameters, source, prefix + "rope_parameters");
  if (has_legacy) {
    const auto other = read_scaling_object(legacy, source, prefix + "rope_scaling");
    const std::string ours = scaling_summary(scaling), theirs = scaling_summary(other);
    if (ours != theirs)
      throw ConfigError(source, prefix + "rope_scaling",
                        "says " + theirs + " but rope_parameters says " + ours +
                            " (Transformers 5 reads rope_parameters): remove or fix one of them");
  }
  return scaling;
}

std::optional<ExportRecord> read_export_record(const json& root, const std::string& source) {
  const std::string key = "pntk_export";
  auto it = root.find(key);
  if (it == root.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) throw ConfigError(source, key, "must be an object, got " + FieldReader::type_name(*it));
  FieldReader fields(*it, source, key);
  ExportRecord record;
  const auto method = fields.string("method");
  if (!method) fields.fail("method", "is missing (the RoPE method the model had before export)");
  record.method = *method;
  const auto factor = fields.number("factor");
  if (!factor) fields.fail("factor", "is missing (the scaling factor the model had before export)");
  record.factor = *factor;
  record.exported_as = fields.string("exported_as").value_or("");
  if (record.exported_as != "longrope")
    fields.fail("exported_as", "must be \"longrope\" (the only form pntk export writes), got \"" +
                                   record.exported_as + "\"");
  record.scaling = read_scaling(*it, source, key + ".");
  return record;
}

}  // namespace

ModelRopeConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw ConfigError(source, line_column(json_text, e.byte > 0 ? e.byte - 1 : 0), parse_error_message(e.what()));
  } catch (const json::exception& e) {  // e.g. out_of_range: a number too large for a double
    throw ConfigError(source, "(json)", parse_error_message(e.what()));
  }
  if (!root.is_object()) throw ConfigError(source, "(top level)", "must be a JSON object");

  FieldReader fields(root, source, "");
  ModelRopeConfig config;
  config.source = source;

  const auto head_dim = fields.integer("head_dim");
  const auto hidden_size = fields.integer("hidden_size");
  const auto heads = fields.integer("num_attention_heads");
  if (!head_dim && !hidden_size) fields.fail("hidden_size", "is missing (needed to derive head_dim)");
  if (!head_dim && !heads) fields.fail("num_attention_heads", "is missing (needed to derive head_dim)");
  if (hidden_size) config.hidden_size = fields.positive("hidden_size", *hidden_size);
  if (heads) config.num_attention_heads = fields.positive("num_attention_heads", *heads);
  if (head_dim) {
    config.head_dim = fields.positive("head_dim", *head_dim);
  } else {
    config.head_dim = config.hidden_size / config.num_attention_heads;  // Transformers floors
    if (config.head_dim <= 0) fields.fail("num_attention_heads", "exceeds hidden_size: head_dim would be 0");
  }

  // Transformers 5 may keep partial_rotary_factor (and rope_theta) inside rope_parameters.
  const auto parameters = root.find("rope_parameters");
  const bool has_parameters = parameters != root.end() && parameters->is_object();
  const json empty = json::object();
  FieldReader rope_parameters(has_parameters ? *parameters : empty, source, "rope_parameters");
  const auto top_partial = fields.number("partial_rotary_factor");
  const auto nested_partial = rope_parameters.number("partial_rotary_factor");
  if (top_partial && nested_partial && *top_partial != *nested_partial)
    rope_parameters.fail("partial_rotary_factor", "disagrees with the top-level partial_rotary_factor");
  config.partial_rotary_factor = top_partial ? *top_partial : nested_partial.value_or(1.0);
  if (!(config.partial_rotary_factor > 0.0 && config.partial_rotary_factor <= 1.0))
    fields.fail("partial_rotary_factor", "must be in (0, 1], got " + FieldReader::format(config.partial_rotary_factor));
  const double rotary = std::floor(static_cast<double>(config.head_dim) * config.partial_rotary_factor);
  if (rotary > 65536) fields.fail("head_dim", "is too large for a rotary dimension (" + FieldReader::format(rotary) + ")");
  config.rotary_dim = static_cast<int>(rotary);
  const std::string dim_field = top_partial      ? "partial_rotary_factor"
                                : nested_partial ? "rope_parameters.partial_rotary_factor"
                                : head_dim                             ? "head_dim"
                                                                       : "hidden_size";
  if (config.rotary_dim < 2 || config.rotary_dim % 2 != 0)
    fields.fail(dim_field, "gives an odd or empty rotary dimension " + std::to_string(config.rotary_dim) +
                               " (RoPE rotates pairs: it must be even and >= 2)");

  const auto max_positions = fields.integer("max_position_embeddings");
  if (!max_positions) fields.fail("max_position_embeddings", "is missing");
  config.max_position_embeddings = fields.positive("max_position_embeddings", *max_positions);
  config.original_max_position_embeddings = fields.integer("original_max_position_embeddings");
  if (config.original_max_position_embeddings)
    fields.positive("original_max_position_embeddings", *config.original_max_position_embeddings);

  if (auto theta = fields.number("rope_theta")) config.rope_theta = fields.positive("rope_theta", *theta);
  config.scaling = read_scaling(root, source);
  config.export_record = read_export_record(root, source);
  if (auto theta = rope_parameters.number("rope_theta"))
    config.rope_theta = rope_parameters.positive("rope_theta", *theta);
  return config;
}

ModelRopeConfig load_model_config(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) throw ConfigError(path, "(path)", "no such file or directory");
  std::string file = path;
  if (S_ISDIR(info.st_mode)) {
    file = path + (path.empty() || path.back() == '/' ? "" : "/") + "config.json";
    if (stat(file.c_str(), &info) != 0) throw ConfigError(file, "(path)", "the model directory has no config.json");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file, "(path)", "cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_model_config(text.str(), file);
}

}  // namespace pntk
