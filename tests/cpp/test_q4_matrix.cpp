// CPU q4 kernels: every SIMD family this CPU runs against the scalar reference, on the
// same packed matrix (narrow last tile, act-order, uneven groups, GEMV and GEMM rows),
// and validation errors that name the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cmath>
#include <iostream>
#include <random>
#include <stdexcept>

#include "core/cpu_features.h"
#include "core/float_round.h"
#include "core/huge_pages.h"
#include "core/q4_matrix.h"
#include "core/thread_pool.h"

#ifdef PNTK_TEST_WITH_OPENMP
#include <omp.h>
#endif

#ifdef __linux__
#include <sched.h>
#endif

namespace pntk {
namespace {

TensorView view_of(void* data, std::vector<int64_t> shape, DType dtype) {
  TensorView t;
  t.data = data;
  t.shape = shape;
  t.strides.assign(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) t.strides[i] = t.strides[i + 1] * shape[i + 1];
  t.dtype = dtype;
  return t;
}

struct RandomGptq {
  int64_t k, n, groups;
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;

  RandomGptq(int64_t k_, int64_t n_, int64_t groups_, std::mt19937& rng) : k(k_), n(n_), groups(groups_) {
    std::uniform_int_distribution<uint32_t> bits;
    std::normal_distribution<double> normal(0.0, 0.02);
    for (int64_t i = 0; i < k / 8 * n; ++i) qweight.push_back(static_cast<int32_t>(bits(rng)));
    for (int64_t i = 0; i < groups * n / 8; ++i) qzeros.push_back(static_cast<int32_t>(bits(rng)));
    for (int64_t i = 0; i < groups * n; ++i) scales.push_back(double_to_half_bits(normal(rng)));
    std::uniform_int_distribution<int32_t> group(0, static_cast<int32_t>(groups - 1));
    for (int64_t i = 0; i < k; ++i) g_idx.push_back(i < groups ? static_cast<int32_t>(i) : group(rng));  // uneven
    std::shuffle(g_idx.begin(), g_idx.end(), rng);
  }
  TensorView qweight_view() { return view_of(qweight.data(), {k / 8, n}, DType::int32); }
  TensorView qzeros_view() { return view_of(qzeros.data(), {groups, n / 8}, DType::int32); }
  TensorView scales_view() { return view_of(scales.data(), {groups, n}, DType::float16); }
  TensorView g_idx_view() { return view_of(g_idx.data(), {k}, DType::int32); }
};

std::vector<float> run(const Q4Matrix& w, const std::string& kernel, const std::vector<float>& x, int64_t m) {
  q4_set_cpu_kernel(kernel);
  std::vector<float> y(static_cast<size_t>(m * w.shape().out_features));
  w.forward(view_of(const_cast<float*>(x.data()), {m, w.shape().in_features}, DType::float32),
            view_of(y.data(), {m, w.shape().out_features}, DType::float32));
  return y;
}

TEST(Q4Matrix, SimdKernelsMatchScalarReference) {
  std::mt19937 rng(std::random_device{}());
  RandomGptq t(320, 200, 7, rng);  // 200 = 3 tiles of 64 + a tile of 8 columns
  TensorView g_idx = t.g_idx_view();
  const Q4Matrix w(t.qweight_view(), t.qzeros_view(), t.scales_view(), &g_idx, nullptr, GptqFormat::gptq_v2);
  EXPECT_TRUE(w.shape().act_order);
  const std::string previous = q4_cpu_kernel().name;
  for (int64_t m : {1, 5, 16, 23}) {
    std::vector<float> x(static_cast<size_t>(m * t.k));
    std::normal_distribution<float> normal;
    for (float& v : x) v = normal(rng);
    const std::vector<float> expected = run(w, "scalar", x, m);
    for (const Q4CpuKernel* kernel : q4_cpu_kernels()) {
      const std::vector<float> y = run(w, kernel->name, x, m);
      double error = 0, norm = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << kernel->name << " M=" << m;
        error += (y[i] - expected[i]) * double(y[i] - expected[i]);
        norm += expected[i] * double(expected[i]);
      }
      EXPECT_LE(std::sqrt(error / norm), 1e-6) << kernel->name << " M=" << m;
    }
  }
  q4_set_cpu_kernel(previous);
}

// fp16 / bf16 x and outputs: each family's row conversions and output rounding against the
// scalar kernel's, within the outputs' rounding (pytest's tolerances, tests/gptq_reference.py).
TEST(Q4Matrix, SimdKernelsMatchScalarReferenceInHalfPrecision) {
  std::mt19937 rng(std::random_device{}());
  RandomGptq t(320, 200, 7, rng);
  TensorView g_idx = t.g_idx_view();
  const Q4Matrix w(t.qweight_view(), t.qzeros_view(), t.scales_view(), &g_idx, nullptr, GptqFormat::gptq_v2);
  const std::string previous = q4_cpu_kernel().name;
  for (DType dtype : {DType::float16, DType::bfloat16}) {
    const auto to_bits = dtype == DType::float16 ? double_to_half_bits : double_to_bfloat16_bits;
    const auto to_float = dtype == DType::float16 ? half_bits_to_float : bfloat16_bits_to_float;
    for (int64_t m : {1, 5, 23}) {
      std::vector<uint16_t> x(static_cast<size_t>(m * t.k)), y(static_cast<size_t>(m * t.n));
      std::normal_distribution<double> normal;
      for (uint16_t& v : x) v = to_bits(normal(rng));
      const auto run_half = [&](const char* kernel) {
        q4_set_cpu_kernel(kernel);
        w.forward(view_of(x.data(), {m, t.k}, dtype), view_of(y.data(), {m, t.n}, dtype));
        std::vector<float> out;
        for (uint16_t v : y) out.push_back(to_float(v));
        return out;
      };
      const std::vector<float> expected = run_half("scalar");
      for (const Q4CpuKernel* kernel : q4_cpu_kernels()) {
        const std::vector<float> out = run_half(kernel->name);
        double error = 0, norm = 0;
        for (size_t i = 0; i < out.size(); ++i) {
          ASSERT_TRUE(std::isfinite(out[i])) << kernel->name << " M=" << m;
          error += (out[i] - expected[i]) * double(out[i] - expected[i]);
          norm += expected[i] * double(expected[i]);
        }
        EXPECT_LE(std::sqrt(error / norm), dtype == DType::float16 ? 2e-3 : 8e-3) << kernel->name << " M=" << m;
      }
    }
  }
  q4_set_cpu_kernel(previous);
}

// The families built into this binary: those this CPU runs are q4_cpu_kernels(), in order; the
// others name the required features it lacks.
TEST(Q4Matrix, KernelFamiliesNameEveryBuiltFamily) {
  std::vector<std::string> built, runnable, kernels;
  std::string listing;
  for (const CpuKernelFamily& family : q4_cpu_kernel_families()) {
    built.push_back(family.name);
    if (family.missing.empty()) runnable.push_back(family.name);
    for (const std::string& feature : family.missing)
      EXPECT_NE(std::find(family.requires.begin(), family.requires.end(), feature), family.requires.end());
    listing += " " + family.name + (family.missing.empty() ? "" : " (lacks " + family.missing.front() + ")");
  }
  for (const Q4CpuKernel* kernel : q4_cpu_kernels()) kernels.push_back(kernel->name);
  EXPECT_EQ(runnable, kernels);
  std::cout << "[   INFO   ] q4 CPU kernel families:" << listing << "; default " << q4_cpu_kernel().name << "\n";
#if defined(__x86_64__)
  EXPECT_EQ(built, (std::vector<std::string>{"avx512vnni", "avx512bf16", "avx512", "avx2", "scalar"}));
#elif defined(__aarch64__)
  EXPECT_EQ(built, (std::vector<std::string>{"neon", "scalar"}));
  EXPECT_EQ(kernels.front(), "neon");  // Advanced SIMD is baseline on aarch64
#endif
}

TEST(Q4Matrix, ValidationNamesTheTensor) {
  std::mt19937 rng(1);
  RandomGptq t(64, 16, 4, rng);
  TensorView g_idx = t.g_idx_view();
  t.g_idx[3] = 4;
  try {
    validate_gptq(t.qweight_view(), t.qzeros_view(), t.scales_view(), &g_idx, nullptr);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "g_idx: value 4 at row 3 is outside [0, groups = 4)");
  }
  TensorView scales = t.scales_view();
  scales.dtype = DType::float32;
  EXPECT_THROW(validate_gptq(t.qweight_view(), t.qzeros_view(), scales, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(parse_gptq_format("gptq_v3"), std::invalid_argument);
}

// parallel_for and parallel_for_after on each thread runtime: pntk's own pool, and the
// process's OpenMP runtime (libgomp, linked into this test for it).
class ParallelFor : public ::testing::TestWithParam<ThreadRuntime> {
 protected:
  void SetUp() override {
    if (GetParam() == ThreadRuntime::openmp) {
#ifdef PNTK_TEST_WITH_OPENMP
      ASSERT_GE(omp_get_max_threads(), 1);  // (a call into the runtime keeps it linked)
#else
      GTEST_SKIP() << "this test binary was built without an OpenMP runtime";
#endif
    }
    set_thread_runtime(GetParam());
    threads_ = get_num_threads();
  }
  void TearDown() override {
    set_num_threads(threads_);
    set_thread_runtime(ThreadRuntime::automatic);
  }
  int threads_ = 1;
};

INSTANTIATE_TEST_SUITE_P(Runtimes, ParallelFor, ::testing::Values(ThreadRuntime::pntk, ThreadRuntime::openmp),
                         [](const ::testing::TestParamInfo<ThreadRuntime>& info) {
                           return std::string(info.param == ThreadRuntime::pntk ? "pntk" : "openmp");
                         });

TEST_P(ParallelFor, RunsOnTheChosenRuntime) {
  const std::string name = thread_runtime_name();
  if (GetParam() == ThreadRuntime::pntk) {
    EXPECT_EQ(name, "pntk");
  } else {
    EXPECT_EQ(name.rfind("openmp (", 0), 0u) << name;
    EXPECT_NE(name.find("omp"), std::string::npos) << name;
  }
}

TEST_P(ParallelFor, CoversEveryTaskOnce) {
  for (int n : {1, 2, 5}) {
    set_num_threads(n);
    std::vector<int> hits(37, 0);
    parallel_for(37, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) ++hits[i];
    });
    for (int h : hits) EXPECT_EQ(h, 1);
  }
  EXPECT_THROW(set_num_threads(0), std::invalid_argument);
}

TEST_P(ParallelFor, CoversEveryTaskOnceWithManyTasks) {
  set_num_threads(2);
  for (int64_t tasks : {2, 3, 9, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
    parallel_for(tasks, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST_P(ParallelFor, AThreadThatFinishesTakesPartOfAnotherShare) {
  set_num_threads(2);
  const auto caller = std::this_thread::get_id();
  std::vector<std::thread::id> ran_on(64);
  parallel_for(64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      ran_on[static_cast<size_t>(i)] = std::this_thread::get_id();
      // The caller's share [0, 32) stalls at its first task. (A caller the OS preempts before
      // its first task may find its whole share taken, task 0 too: then it does not stall.)
      if (i == 0 && ran_on[0] == caller) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  int taken = 0;  // tasks of the caller's share that the other thread ran
  for (int i = 0; i < 32; ++i) taken += ran_on[static_cast<size_t>(i)] != caller;
  EXPECT_GT(taken, 0);
  for (int i = 32; i < 64; ++i) EXPECT_NE(ran_on[static_cast<size_t>(i)], std::thread::id());
}

TEST_P(ParallelFor, SetupRunsFirstWhileTheOtherThreadsWarmTheirShares) {
  set_num_threads(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> set_up{false};
  std::atomic<int> bodies_before_setup{0}, tasks_run{0};
  std::mutex warm_mutex;
  std::vector<std::array<int64_t, 3>> warm_calls;  // begin, end, step
  bool warm_on_caller = false;
  parallel_for_after(
      64,
      [&] {  // waits (up to 2 s) for the other thread's 3 warm steps
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        for (;;) {
          {
            std::lock_guard<std::mutex> lock(warm_mutex);
            if (warm_calls.size() >= 3 || std::chrono::steady_clock::now() > deadline) break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        set_up = true;
      },
      [&](int64_t begin, int64_t end, int64_t step) {
        std::lock_guard<std::mutex> lock(warm_mutex);
        warm_calls.push_back({begin, end, step});
        warm_on_caller |= std::this_thread::get_id() == caller;
        return step < 2;
      },
      [&](int64_t begin, int64_t end) {
        if (!set_up) ++bodies_before_setup;
        tasks_run += static_cast<int>(end - begin);
      });
  EXPECT_EQ(bodies_before_setup.load(), 0);
  EXPECT_EQ(tasks_run.load(), 64);
  EXPECT_FALSE(warm_on_caller);
  // the other thread's share is [32, 64); warming stops at the first false
  const std::vector<std::array<int64_t, 3>> expected{{32, 64, 0}, {32, 64, 1}, {32, 64, 2}};
  EXPECT_EQ(warm_calls, expected);
}

TEST_P(ParallelFor, ASetupThatThrowsRunsNoBody) {
  for (int n : {1, 2}) {
    set_num_threads(n);
    std::atomic<int> bodies{0};
    EXPECT_THROW(parallel_for_after(
                     8, [] { throw std::runtime_error("setup failed"); },
                     [](int64_t, int64_t, int64_t) { return true; }, [&](int64_t, int64_t) { ++bodies; }),
                 std::runtime_error);
    EXPECT_EQ(bodies.load(), 0);
  }
}

TEST_P(ParallelFor, AnExceptionInAnyTaskReachesTheCaller) {
  set_num_threads(2);
  for (int64_t failing : {0, 63}) {  // in the caller's share, in the other thread's
    std::atomic<int> run{0};
    try {
      parallel_for(64, [&](int64_t begin, int64_t) {
        ++run;
        if (begin == failing) throw std::out_of_range("task " + std::to_string(begin));
      });
      ADD_FAILURE() << "no exception";
    } catch (const std::out_of_range& e) {
      EXPECT_EQ(std::string(e.what()), "task " + std::to_string(failing));
    }
    EXPECT_GE(run.load(), 2);  // the other tasks ran on
  }
}

TEST(HugePageAllocator, LargeBlocksStartOnA2MiBBoundary) {
  std::vector<uint32_t, HugePageAllocator<uint32_t>> large(size_t(3) << 20, 7u), small(1000, 9u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % (size_t(1) << 21), 0u);
  EXPECT_EQ(large.back(), 7u);
  EXPECT_EQ(small.back(), 9u);
  large.resize(10);  // shrinking keeps the block; clearing frees it through the same allocator
  large.shrink_to_fit();
  EXPECT_EQ(large.size(), 10u);
}

#ifdef __linux__
TEST(LeaveCpu, MovesTheThreadAndRestoresItsAffinity) {
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof before, &before), 0);
  const int cpu = current_cpu();
  if (cpu < 0 || CPU_COUNT(&before) < 2) GTEST_SKIP() << "needs at least 2 CPUs in this thread's affinity";
  leave_cpu(cpu);
  EXPECT_NE(current_cpu(), cpu);
  cpu_set_t after;
  ASSERT_EQ(sched_getaffinity(0, sizeof after, &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&before, &after));
}
#endif

}  // namespace
}  // namespace pntk
