#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <dlfcn.h>
#include <link.h>
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

using Body = std::function<void(int64_t begin, int64_t end)>;

// One parallel job of `parts` parts, made on the calling thread: part p owns the contiguous
// share [p T / P, (p + 1) T / P) of the T tasks. Part 0 (the caller) runs the setup, if any,
// while the other parts warm their shares (await_setup); then every part runs its share
// (run_shares). Exceptions stay inside the part that threw and are rethrown by rethrow() once
// every part is done.
class Job {
 public:
  enum class SetupState { running, done, failed };

  Job(int64_t tasks, int parts, const std::function<void()>* setup, const WarmFn* warm, const Body& body)
      : shares_(static_cast<size_t>(parts)),
        body_(body),
        warm_(warm),
        setup_(setup),
        setup_state_(setup ? SetupState::running : SetupState::done),
        caller_cpu_(current_cpu()) {
    for (int p = 0; p < parts; ++p) shares_[static_cast<size_t>(p)] = pack(tasks * p / parts, tasks * (p + 1) / parts);
  }

  // Runs part `part` on the calling thread: 0 on the job's caller, the others on the pool's
  // workers or the OpenMP team's threads.
  void run_part(int part) {
    // The scheduler may have woken this thread on the caller's CPU (see leave_cpu).
    if (part != 0 && caller_cpu_ >= 0 && current_cpu() == caller_cpu_) leave_cpu(caller_cpu_);
    try {
      if (part == 0) {
        run_setup();
        run_shares(0);
      } else if (await_setup(part) == SetupState::done) {
        run_shares(part);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (part == 0) {
        caller_error_ = std::current_exception();
      } else if (!worker_error_) {
        worker_error_ = std::current_exception();
      }
    }
  }

  // The caller's exception first, else the first worker's.
  void rethrow() const {
    if (caller_error_) std::rethrow_exception(caller_error_);
    if (worker_error_) std::rethrow_exception(worker_error_);
  }

 private:
  void run_setup() {
    if (!setup_) return;
    try {
      (*setup_)();
    } catch (...) {
      setup_state_.store(SetupState::failed, std::memory_order_release);
      throw;
    }
    setup_state_.store(SetupState::done, std::memory_order_release);
  }

  // A share [begin, end) packed in one word (begin in the low 32 bits), so an owner's take
  // and a thief's split are single compare-exchanges.
  static uint64_t pack(int64_t begin, int64_t end) {
    return static_cast<uint64_t>(begin) | static_cast<uint64_t>(end) << 32;
  }
  static int64_t share_begin(uint64_t share) { return static_cast<int64_t>(share & 0xFFFFFFFFu); }
  static int64_t share_end(uint64_t share) { return static_cast<int64_t>(share >> 32); }

  // A part takes the tasks of its share from the front, one at a time, so its memory stream
  // runs on without a jump. A part whose share is empty takes the back half of the largest
  // share left (its owner keeps the front) and goes on the same way, so parts end within about
  // one task of each other, a part the OS preempts delays the job by about one task, and a
  // share whose part never runs (an OpenMP team smaller than asked for) is taken by the others.
  void run_shares(int part) {
    std::atomic<uint64_t>& own = shares_[static_cast<size_t>(part)];
    for (;;) {
      uint64_t share = own.load(std::memory_order_relaxed);
      while (share_begin(share) < share_end(share)) {
        const int64_t task = share_begin(share);
        if (own.compare_exchange_weak(share, pack(task + 1, share_end(share)), std::memory_order_relaxed)) {
          body_(task, task + 1);
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

  std::vector<std::atomic<uint64_t>> shares_;  // [parts]
  const Body& body_;
  const WarmFn* warm_;
  const std::function<void()>* setup_;
  std::atomic<SetupState> setup_state_;
  const int caller_cpu_;
  std::mutex error_mutex_;
  std::exception_ptr caller_error_, worker_error_;
};

// pntk's own threads. Workers sleep on `wake` until `generation` changes (after polling for
// it, see kSpin), run their part of the current job, and report on `done`. One job at a time
// (`job_mutex`), so concurrent callers queue up.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_workers(); }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> job(job_mutex_);
    stop_workers();
    stopping_ = false;
    // New workers wait for the next job, not the last finished one.
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this, i, seen = generation_.load()] { worker_loop(i, seen); });
  }

  // The job's parts on the caller (part 0) and the first parts - 1 workers.
  void run(Job& job, int parts) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    job.run_part(0);
    poll_briefly([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void worker_loop(int part, uint64_t seen) {
    for (;;) {
      poll_briefly([&] { return generation_.load(std::memory_order_acquire) != seen || stopping_.load(); });
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        if (part >= parts_) continue;
        job = job_;
      }
      job->run_part(part);
      std::lock_guard<std::mutex> lock(mutex_);
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
  Job* job_ = nullptr;  // written under mutex_ before generation_ changes
  int parts_ = 0;
  std::atomic<int> pending_{0};  // written under mutex_, polled without it
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
};

// The process's OpenMP runtime, found by name among the loaded libraries (torch's libgomp,
// Intel's libiomp5 or LLVM's libomp, which all export libgomp's entry points):
// GOMP_parallel(fn, data, num_threads, flags) runs fn(data) on a team of up to num_threads
// threads, the calling thread as thread 0, and returns when all are done.
struct OpenMp {
  using Parallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
  Parallel parallel = nullptr;
  int (*thread_num)() = nullptr;
  std::string library;
};

std::optional<OpenMp> find_openmp() {
#ifdef __linux__
  std::vector<std::string> loaded;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* names) {
        const std::string path = info->dlpi_name ? info->dlpi_name : "";
        const std::string file = path.substr(path.find_last_of('/') + 1);
        for (const char* prefix : {"libgomp", "libiomp", "libomp"}) {
          if (file.rfind(prefix, 0) == 0) static_cast<std::vector<std::string>*>(names)->push_back(path);
        }
        return 0;
      },
      &loaded);
  for (const std::string& path : loaded) {  // in load order: torch's, when torch came first
    void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    OpenMp openmp;
    openmp.parallel = reinterpret_cast<OpenMp::Parallel>(dlsym(handle, "GOMP_parallel"));
    openmp.thread_num = reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_thread_num"));
    if (openmp.parallel != nullptr && openmp.thread_num != nullptr) {
      openmp.library = path;
      return openmp;
    }
  }
#endif
  return std::nullopt;
}

// The job's parts as an OpenMP team: thread p runs part p (the caller is thread 0).
void run_on_team(const OpenMp& openmp, Job& job, int parts) {
  struct Team {
    Job* job;
    const OpenMp* openmp;
  } team{&job, &openmp};
  openmp.parallel(
      [](void* data) {
        const Team& team = *static_cast<const Team*>(data);
        team.job->run_part(team.openmp->thread_num());
      },
      &team, static_cast<unsigned>(parts), 0);
}

// What parallel_for runs on (ThreadRuntime), chosen once from PNTK_CPU_THREADS unless set.
struct Runtime {
  std::mutex mutex;
  bool chosen = false;
  std::optional<OpenMp> openmp;  // set: the OpenMP team; empty: pntk's pool
  std::unique_ptr<ThreadPool> pool;
  int threads = default_threads();
};

Runtime& runtime() {
  static Runtime instance;
  return instance;
}

// Whether OMP_WAIT_POLICY asks OpenMP threads to sleep as soon as they are idle. They then
// take no core from pntk's pool, and waking them for each call costs more than the pool's
// polling workers (a 4096 x 512 GEMV: 53 us back to back on the team, 18 us on the pool).
bool openmp_threads_sleep_when_idle() {
  const char* value = std::getenv("OMP_WAIT_POLICY");
  std::string policy = value ? value : "";
  for (char& c : policy) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return policy == "passive";
}

void choose(Runtime& r, ThreadRuntime choice) {
  r.openmp.reset();
  if (choice == ThreadRuntime::openmp || (choice == ThreadRuntime::automatic && !openmp_threads_sleep_when_idle())) {
    r.openmp = find_openmp();
    PNTK_CHECK(r.openmp || choice == ThreadRuntime::automatic, "PNTK_CPU_THREADS",
               "is openmp, but no OpenMP runtime (libgomp, libiomp5, libomp) is loaded in this process");
  }
  r.chosen = true;
}

// Chooses from PNTK_CPU_THREADS unless a choice was made (by it or set_thread_runtime).
void choose_once(Runtime& r) {
  if (r.chosen) return;
  const char* value = std::getenv("PNTK_CPU_THREADS");
  choose(r, thread_runtime_from_name(value ? value : "auto", "PNTK_CPU_THREADS"));
}

// Runs the job on the chosen runtime (choosing it on the first call).
void run_job(int64_t tasks, const std::function<void()>* setup, const WarmFn* warm, const Body& body) {
  PNTK_CHECK(tasks < (int64_t(1) << 32), "tasks", "must be below 2^32, got " + std::to_string(tasks));
  Runtime& r = runtime();
  const OpenMp* openmp = nullptr;
  ThreadPool* pool = nullptr;
  int threads;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    choose_once(r);
    threads = r.threads;
    if (r.openmp) {
      openmp = &*r.openmp;
    } else {
      if (!r.pool) r.pool = std::make_unique<ThreadPool>(threads);
      if (r.pool->threads() != threads) r.pool->resize(threads);
      pool = r.pool.get();
    }
  }
  const int parts = static_cast<int>(std::min<int64_t>(threads, tasks));
  if (parts <= 1) {
    if (setup) (*setup)();
    if (tasks > 0) body(0, tasks);
    return;
  }
  Job job(tasks, parts, setup, warm, body);
  if (openmp) {
    run_on_team(*openmp, job, parts);
  } else {
    pool->run(job, parts);
  }
  job.rethrow();
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
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.threads = threads;
}

int get_num_threads() {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.threads;
}

ThreadRuntime thread_runtime_from_name(const std::string& name, const std::string& field) {
  if (name == "auto") return ThreadRuntime::automatic;
  if (name == "openmp") return ThreadRuntime::openmp;
  if (name == "pntk") return ThreadRuntime::pntk;
  throw std::invalid_argument(field + ": must be auto, openmp or pntk, got '" + name + "'");
}

void set_thread_runtime(ThreadRuntime choice) {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  choose(r, choice);
}

std::string thread_runtime_name() {
  Runtime& r = runtime();
  std::lock_guard<std::mutex> lock(r.mutex);
  choose_once(r);
  return r.openmp ? "openmp (" + r.openmp->library + ")" : "pntk";
}

void parallel_for(int64_t tasks, const Body& body) { run_job(tasks, nullptr, nullptr, body); }

void parallel_for_after(int64_t tasks, const std::function<void()>& setup, const WarmFn& warm, const Body& body) {
  run_job(tasks, &setup, &warm, body);
}

}  // namespace pntk
