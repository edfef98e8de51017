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

// The CPU the calling thread runs on; -1 where the OS does not say.
int current_cpu();

// Moves the calling thread off `cpu` (when its affinity allows another CPU) and restores its
// affinity; the thread stays where it landed. A worker that finds itself on the CPU of the
// thread that handed it the job calls this: on a 2-vCPU VM the scheduler often woke a worker
// there and left it there while both polled, so the two took turns on one core and half the
// calls of some runs went at one thread's speed (the worker started 300 us late).
void leave_cpu(int cpu);

}  // namespace pntk
