// The subset of a Hugging Face config.json that decides the rotary embedding, read and
// validated in one place. Every field name below is the config.json key it comes from.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pntk {

// rope_scaling (Transformers 4.x) or rope_parameters (Transformers 5), as written.
struct RopeScalingFields {
  std::string key;   // "rope_scaling" or "rope_parameters": the prefix of error field names
  std::string type;  // "type" or "rope_type" as written; "default"/"none" never reach here
  std::optional<double> factor;
  std::optional<int64_t> original_max_position_embeddings;
  std::optional<double> attention_factor;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  std::optional<double> beta_fast;
  std::optional<double> beta_slow;
  std::optional<bool> truncate;
  std::optional<double> low_freq_factor;
  std::optional<double> high_freq_factor;
  std::vector<double> long_factor;   // longrope only
  std::vector<double> short_factor;  // longrope only
};

// "pntk_export": the record `pntk export` writes into config.json beside the longrope form of
// the plan, so that the plan stays the original one (`pntk inspect` reports it unchanged):
//   {"method": "pntk", "factor": 4, "exported_as": "longrope",
//    "rope_scaling": <as before export>, "rope_parameters": <as before export>}
struct ExportRecord {
  std::string method;                       // the method before export, as method_name() writes it
  double factor = 1.0;                      // its scaling factor
  std::string exported_as;                  // "longrope": the only form export writes
  std::optional<RopeScalingFields> scaling; // the scaling before export (nullopt: none)
};

struct ModelRopeConfig {
  std::string source;  // the config.json path, or "<dict>" for an in-memory config
  int64_t hidden_size = 0;
  int64_t num_attention_heads = 0;
  int64_t head_dim = 0;                 // config head_dim, else hidden_size / num_attention_heads
  double partial_rotary_factor = 1.0;
  int rotary_dim = 0;                   // int(head_dim * partial_rotary_factor), even
  double rope_theta = 10000.0;          // rope_parameters.rope_theta, else rope_theta, else 10000
  int64_t max_position_embeddings = 0;
  std::optional<int64_t> original_max_position_embeddings;  // the top-level key
  std::optional<RopeScalingFields> scaling;                 // nullopt: absent, null, default, none
  std::optional<ExportRecord> export_record;                // pntk_export, when present
};

// Parse and validate config.json text. `source` names the file in error messages.
// Throws ConfigError (file, field, message); JSON syntax errors name "line L, column C".
ModelRopeConfig parse_model_config(const std::string& json_text, const std::string& source);

// `path` is a config.json or a model directory holding one.
ModelRopeConfig load_model_config(const std::string& path);

}  // namespace pntk
