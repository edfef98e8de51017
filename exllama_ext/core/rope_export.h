// A RopePlan in the form today's engines take: per-dimension frequency factors f_i with
//   inv_freq_i = 1 / (fp32(f_i) * p_i)
// (Transformers and vLLM "longrope" long_factor / short_factor; llama.cpp's rope_freqs tensor,
// which divides each angle by f_i). One factor set serves all of them.
#pragma once
#include <vector>

#include "core/rope_plan.h"

namespace pntk {

// f_i such that fp32(1 / fp32(f_i * p_i)) equals the plan's fp32 inv_freq_i exactly: the float
// nearest the ideal ratio among the neighbours that hit it, else the nearest miss (then within
// 1 ulp). Throws ConfigError naming the field for plans factors cannot express: none (nothing to
// export), dynamic (depends on the sequence length), longrope (already in this form) and
// runner overrides (export writes the model's own scaling).
std::vector<float> frequency_factors(const RopePlan& plan);

}  // namespace pntk
