#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

#include "core/errors.h"

namespace pntk {

namespace {

using WarmFn = std::function<bool(int64_t begin, int64_t end, int64_t step)>;

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// Waking a thread blocked on a condition variable took about 40 us in the VMs measured (a
// 4096x128 q4 GEMV: 10 us on one thread, 51 us on two). So a worker that finished a job
// polls for the next one for kSpin before it blocks, and the caller polls for the workers'
// end before it blocks; both yield the core between polls, so other runnable threads (torch's
// own) are not starved. Decode calls come back to back well within kSpin.
constexpr auto kSpin = std::chrono::microseconds(500);

// Polls `ready` until it returns true or kSpin has passed.
template <class Ready>
void poll_briefly(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  while (!ready() && std::chrono::steady_clock::now() <= deadline) std::this_thread::yield();
}

// Workers sleep on `wake` until `generation` changes (after polling for it, see kSpin), run
// their share of the current job (once the caller's setup, if any, is done: await_setup), and
// report on `done`. One job at a time (`job_mutex`), so concurrent callers queue up.
class ThreadPool {
 public:
  enum class SetupState { running, done, failed };

  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_workers(); }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> job(job_mutex_);
    stop_workers();
    stopping_ = false;
    shares_ = std::vector<std::atomic<uint64_t>>(static_cast<size_t>(threads));
    // New workers wait for the next job, not the last finished one.
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this, i, seen = generation_.load()] { worker_loop(i, seen); });
  }

  // setup and warm may be null (plain parallel_for).
  void run(int64_t tasks, const std::function<void()>* setup, const WarmFn* warm,
           const std::function<void(int64_t, int64_t)>& body) {
    PNTK_CHECK(tasks < (int64_t(1) << 32), "tasks", "must be below 2^32, got " + std::to_string(tasks));
    std::lock_guard<std::mutex> job(job_mutex_);
    const int parts = static_cast<int>(std::min<int64_t>(threads(), tasks));
    if (parts <= 1) {
      if (setup) (*setup)();
      if (tasks > 0) body(0, tasks);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      warm_ = warm;
      setup_state_.store(setup ? SetupState::running : SetupState::done, std::memory_order_relaxed);
      caller_cpu_ = current_cpu();
      parts_ = parts;
      for (int p = 0; p < threads(); ++p)  // parts past `parts` get empty shares
        shares_[static_cast<size_t>(p)] = p < parts ? pack(tasks * p / parts, tasks * (p + 1) / parts) : 0;
      pending_ = parts - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr own_error;
    try {
      if (setup) {
        try {
          (*setup)();
        } catch (...) {
          setup_state_.store(SetupState::failed, std::memory_order_release);
          throw;
        }
        setup_state_.store(SetupState::done, std::memory_order_release);
      }
      run_shares(0);
    } catch (...) {
      own_error = std::current_exception();
    }
    poll_briefly([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    body_ = nullptr;
    if (own_error) std::rethrow_exception(own_error);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // A share [begin, end) packed in one word (begin in the low 32 bits), so an owner's take
  // and a thief's split are single compare-exchanges.
  static uint64_t pack(int64_t begin, int64_t end) {
    return static_cast<uint64_t>(begin) | static_cast<uint64_t>(end) << 32;
  }
  static int64_t share_begin(uint64_t share) { return static_cast<int64_t>(share & 0xFFFFFFFFu); }
  static int64_t share_end(uint64_t share) { return static_cast<int64_t>(share >> 32); }

  // Part p owns the contiguous share [p T / P, (p + 1) T / P) of the tasks and takes them from
  // the front, one at a time, so its memory stream runs on without a jump. A part whose share
  // is empty takes the back half of the largest share left (its owner keeps the front) and
  // goes on the same way, so parts end within about one task of each other, and a part the
  // OS preempts delays the job by about one task.
  void run_shares(int part) {
    std::atomic<uint64_t>& own = shares_[static_cast<size_t>(part)];
    for (;;) {
      uint64_t share = own.load(std::memory_order_relaxed);
      while (share_begin(share) < share_end(share)) {
        const int64_t task = share_begin(share);
        if (own.compare_exchange_weak(share, pack(task + 1, share_end(share)), std::memory_order_relaxed)) {
          (*body_)(task, task + 1);
          share = own.load(std::memory_order_relaxed);
        }
      }
      if (!steal_into(own)) return;
    }
  }

  // Moves the back half (at least one task) of the largest share into `own`; false when every
  // share is empty.
  bool steal_into(std::atomic<uint64_t>& own) {
    for (;;) {
      std::atomic<uint64_t>* victim = nullptr;
      uint64_t largest = 0;
      for (auto& share : shares_) {
        const uint64_t seen = share.load(std::memory_order_relaxed);
        if (share_end(seen) - share_begin(seen) > share_end(largest) - share_begin(largest)) {
          victim = &share;
          largest = seen;
        }
      }
      if (victim == nullptr) return false;
      const int64_t begin = share_begin(largest), end = share_end(largest), middle = begin + (end - begin) / 2;
      if (victim->compare_exchange_strong(largest, pack(begin, middle), std::memory_order_relaxed)) {
        own.store(pack(middle, end), std::memory_order_relaxed);
        return true;
      }
    }
  }

  // Warms the part's share while the caller's setup runs, then waits for its end (a few
  // microseconds for the q4 GEMV, so the wait polls without blocking).
  SetupState await_setup(int part) {
    SetupState state = setup_state_.load(std::memory_order_acquire);
    if (state != SetupState::running) return state;
    const uint64_t share = shares_[static_cast<size_t>(part)].load(std::memory_order_relaxed);
    for (int64_t step = 0; warm_ != nullptr; ++step) {
      if ((state = setup_state_.load(std::memory_order_acquire)) != SetupState::running) return state;
      if (!(*warm_)(share_begin(share), share_end(share), step)) break;
    }
    while ((state = setup_state_.load(std::memory_order_acquire)) == SetupState::running) std::this_thread::yield();
    return state;
  }

  void worker_loop(int part, uint64_t seen) {
    for (;;) {
      poll_briefly([&] { return generation_.load(std::memory_order_acquire) != seen || stopping_.load(); });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        if (part >= parts_) continue;
      }
      // The scheduler may have woken this worker on the caller's CPU (see leave_cpu).
      if (caller_cpu_ >= 0 && current_cpu() == caller_cpu_) leave_cpu(caller_cpu_);
      std::exception_ptr error;
      try {
        if (await_setup(part) == SetupState::done) run_shares(part);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
  }

  std::mutex job_mutex_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  const WarmFn* warm_ = nullptr;
  std::atomic<SetupState> setup_state_{SetupState::done};
  int caller_cpu_ = -1;  // written under mutex_ before generation_ changes
  std::vector<std::atomic<uint64_t>> shares_;  // [threads], see run_shares
  int parts_ = 0;
  std::atomic<int> pending_{0};        // written under mutex_, polled without it
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool instance(default_threads());
  return instance;
}

}  // namespace

int current_cpu() {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}

void leave_cpu(int cpu) {
#ifdef __linux__
  cpu_set_t allowed;
  if (cpu < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  if (!CPU_ISSET(cpu, &allowed) || CPU_COUNT(&allowed) < 2) return;
  cpu_set_t elsewhere = allowed;
  CPU_CLR(cpu, &elsewhere);
  if (sched_setaffinity(0, sizeof elsewhere, &elsewhere) == 0) sched_setaffinity(0, sizeof allowed, &allowed);
#else
  (void)cpu;
#endif
}

void set_num_threads(int threads) {
  PNTK_CHECK(threads >= 1, "threads", "must be at least 1, got " + std::to_string(threads));
  if (threads != pool().threads()) pool().resize(threads);
}

int get_num_threads() { return pool().threads(); }

void parallel_for(int64_t tasks, const std::function<void(int64_t, int64_t)>& body) {
  pool().run(tasks, nullptr, nullptr, body);
}

void parallel_for_after(int64_t tasks, const std::function<void()>& setup, const WarmFn& warm,
                        const std::function<void(int64_t, int64_t)>& body) {
  pool().run(tasks, &setup, &warm, body);
}

}  // namespace pntk
