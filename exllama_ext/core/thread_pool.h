// A small persistent thread pool for the CPU kernels: parallel_for gives each of the pool's
// threads and the calling thread a contiguous share of [0, tasks), taken one task at a time;
// a thread that finishes its share takes the back half of the largest share left.
#pragma once
#include <cstdint>
#include <functional>

namespace pntk {

// Threads used by parallel_for; default: all cores (std::thread::hardware_concurrency).
void set_num_threads(int threads);  // threads >= 1, else std::invalid_argument
int get_num_threads();

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
