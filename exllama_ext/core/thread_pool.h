// Parallel loops for the CPU kernels: parallel_for gives each thread, the calling one
// included, a contiguous share of [0, tasks), taken one task at a time; a thread that finishes
// its share takes the back half of the largest share left.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace pntk {

// Threads used by parallel_for; default: all cores (std::thread::hardware_concurrency).
void set_num_threads(int threads);  // threads >= 1, else std::invalid_argument
int get_num_threads();

// The threads parallel_for runs on:
//  - openmp: the process's OpenMP runtime (torch's libgomp, when torch runs on OpenMP). Its
//    threads spin for milliseconds after each of torch's parallel operators; threads of pntk's
//    own beside them took turns with them on the cores: a q4 GEMV just after a torch operator
//    ran 1.8x slower, the q4 matmuls of Llama decode layers with torch's attention between them
//    3-4x (scripts/bench_q4_cpu.py). As members of the same team they run pntk's parts at once.
//  - pntk: a small persistent pool of pntk's own (when no OpenMP runtime is loaded).
// Chosen at the first parallel call from the environment variable PNTK_CPU_THREADS: "auto"
// (the default: openmp when an OpenMP runtime is loaded and OMP_WAIT_POLICY is not passive,
// else pntk), "openmp" (an error when none is loaded) or "pntk"; set_thread_runtime chooses
// again. Measured on 2 cores, 4096 x 4096 g128 M = 1 calls right after a torch.sum: 208-220 us
// on the team, 373-375 us on the pool (215-219 us both after a pause).
enum class ThreadRuntime { automatic, openmp, pntk };
void set_thread_runtime(ThreadRuntime runtime);  // openmp with none loaded: std::invalid_argument
// "auto", "openmp" or "pntk"; else std::invalid_argument naming `field`.
ThreadRuntime thread_runtime_from_name(const std::string& name, const std::string& field);
// "openmp (<library path>)" or "pntk" (choosing the runtime if no call has yet).
std::string thread_runtime_name();

// Runs body(begin, end) over disjoint ranges covering [0, tasks); returns when all are done.
// An exception thrown by a range is rethrown in the caller after the others finish.
// tasks < 2^32, else std::invalid_argument.
void parallel_for(int64_t tasks, const std::function<void(int64_t begin, int64_t end)>& body);

// parallel_for with a setup step that body depends on: the calling thread runs setup() while
// each other thread calls warm(begin, end, step) for step = 0, 1, ... on its share [begin, end)
// until setup has returned or warm returns false; then all run body as parallel_for does.
// (The q4 GEMV: the workers pull their first weights into cache while the caller prepares x.)
// If setup throws, body runs nowhere and the exception is rethrown in the caller.
void parallel_for_after(int64_t tasks, const std::function<void()>& setup,
                        const std::function<bool(int64_t begin, int64_t end, int64_t step)>& warm,
                        const std::function<void(int64_t begin, int64_t end)>& body);

// The CPU the calling thread runs on; -1 where the OS does not say.
int current_cpu();

// Moves the calling thread off `cpu` (when its affinity allows another CPU) and restores its
// affinity; the thread stays where it landed. A worker that finds itself on the CPU of the
// thread that handed it the job calls this: on a 2-vCPU VM the scheduler often woke a worker
// there and left it there while both polled, so the two took turns on one core and half the
// calls of some runs went at one thread's speed (the worker started 300 us late).
void leave_cpu(int cpu);

}  // namespace pntk
