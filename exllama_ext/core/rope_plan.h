// A RoPE plan: the resolved scaling method of one model for one runner, its fp32 inverse
// frequencies (bit-compatible with the reference implementations) and the one-line report.
//
// Notation (DESIGN.md): d = rotary dim, b = base (rope_theta), i = pair index 0..d/2-1,
// e_i = fp32(2i) / fp32(d) in fp32, p_i = powf(fp32(b), e_i).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/model_config.h"

namespace pntk {

// Explicit values; grow only at the end.
enum class RopeMethod : int {
  none = 0,
  linear = 1,    // positional interpolation: inv_freq / s
  ntk = 2,       // NTK-aware: base * alpha^(d/(d-2))
  dynamic = 3,   // dynamic NTK: base depends on the current sequence length
  pntk = 4,      // airophin "partial NTK" (NTK-by-parts, bhenrym14)
  yarn = 5,      // YaRN (and the paper's "ntk-by-parts" ablation with attention factor 1)
  llama3 = 6,    // Llama 3.1 wavelength bands
  longrope = 7,  // per-dimension factors (Phi-3 "longrope"; pntk's export target)
};
const char* method_name(RopeMethod method);

// ExLlama-style runner settings that stack on top of config.json.
struct RunnerOverrides {
  std::optional<double> theta;      // replaces rope_theta
  double alpha_value = 1.0;         // base *= alpha^(d/(d-2)) before the method
  double compress_pos_emb = 1.0;    // positions /= compress_pos_emb after the method
  std::optional<int64_t> max_seq_len;
  bool static_tables = false;       // the runner builds its tables once (ExLlama): say so for dynamic
};

struct CorrectionRange {
  const char* name;  // "beta", "gamma" (pntk) or "yarn"
  double low, high;  // pair indices where the ramp starts and ends
};

struct RopePlan {
  RopeMethod method = RopeMethod::none;
  std::string method_note;        // e.g. "inferred from original_max_position_embeddings"
  std::string method_field;       // the config field that chose the method, for messages
  std::string exported_as;        // "longrope" when read back from a `pntk export` (pntk_export)
  double factor = 1.0;            // the method's scaling factor (pntk: integer)
  double attention_factor = 1.0;  // cos and sin are multiplied by it
  double config_theta = 10000.0;  // rope_theta of the config
  double base = 10000.0;          // after the theta and alpha overrides, before the method
  int rotary_dim = 0;
  int64_t original_max_position_embeddings = 0;
  int64_t extended_max_position_embeddings = 0;
  int64_t max_seq_len = 0;        // table length a runner should allocate
  RunnerOverrides overrides;
  std::string source;

  // Method parameters, resolved from config defaults.
  double ntk_alpha = 1.0;  // config type "ntk" only; a runner's alpha_value is already in `base`
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn
  bool truncate = true;                      // yarn
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  std::vector<double> long_factor, short_factor;         // longrope
  std::vector<CorrectionRange> correction_ranges;

  // fp32 inverse frequencies [d/2]; `seq_len` matters to dynamic and longrope only
  // (0 = the plan's max_seq_len for static-table runners, else max_position_embeddings).
  std::vector<float> inv_freq(int64_t seq_len = 0) const;
  // Angles are (position * position_scale) * inv_freq_i.
  double position_scale() const { return 1.0 / overrides.compress_pos_emb; }
  // "pntk: RoPE pntk, scaling factor 4 (4096 -> 16384 positions), base 10000, rotary dim 128"
  std::string describe() const;
};

// Resolves method, factor, lengths and attention factor from the config and overrides.
// Throws ConfigError naming the field (overrides are named "<runner overrides>").
RopePlan build_rope_plan(const ModelRopeConfig& config, const RunnerOverrides& overrides = {});

// p_i = fp32(base) ** (fp32(2i) / fp32(d)) in fp32: torch's `base ** (arange(0, d, 2).float() / d)`,
// with torch's own CPU pow (see torch_pow.h).
std::vector<float> position_frequencies(double base, int dim);

// Correction dimension of the YaRN / NTK-by-parts ramps: the pair index whose wavelength
// completes `rotations` turns in `length` positions, d*ln(L/(2*pi*r)) / (2*ln b).
double correction_dim(double rotations, int dim, double base, double length);
// (max(floor(corr(r_low)), 0), min(ceil(corr(r_high)), d-1)); unrounded when !truncate.
CorrectionRange correction_range(const char* name, double rotations_low, double rotations_high, int dim,
                                 double base, double length, bool truncate);

// Shortest faithful decimal form: "4", "2.5", "10000", "20221.26392".
std::string format_number(double x);

}  // namespace pntk
