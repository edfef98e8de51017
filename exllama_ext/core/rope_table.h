// cos/sin tables of a RopePlan, NeoX ("rotate half") layout:
//   cos[pos, j] = attention_factor * cos(angle(pos, j mod d/2)), j in [0, d)   (sin likewise)
//   angle(pos, i) = (pos * position_scale) * inv_freq_i
// Angles and cos/sin are evaluated in double and rounded once to the output dtype, so the
// tables equal cos(pos * inv_freq_f32) to within half an ulp of the output type.
#pragma once
#include <cstdint>
#include <vector>

namespace pntk {

// Explicit values; grow only at the end.
enum class TableDtype : int { float32 = 0, float16 = 1, bfloat16 = 2 };
int table_dtype_size(TableDtype dtype);

struct RopeTableArgs {
  const float* inv_freq;    // [half_dim] fp32
  int half_dim;             // rotary_dim / 2
  int64_t first_position;   // positions first_position .. first_position + positions - 1
  int64_t positions;        // rows to write
  double position_scale;    // 1 / compress_pos_emb
  double attention_factor;  // folded into cos and sin
  TableDtype dtype;
};

// Writes `positions` rows of cos and sin, each [positions, 2*half_dim] row-major, contiguous.
void rope_table(const RopeTableArgs& args, void* cos_out, void* sin_out);

}  // namespace pntk
