// A persistent pool of worker threads for the batch calls: starting threads on every call cost
// ~30 us each, as much as encoding thousands of ids.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace z2z {

class WorkerPool {
 public:
  // The process-wide pool. A forked child gets a fresh one: the parent's threads do not exist
  // there. Pools are never destroyed, so that no thread is joined during interpreter shutdown.
  static WorkerPool& instance() {
    static std::mutex guard;
    static WorkerPool* pool = nullptr;
    std::lock_guard<std::mutex> lock(guard);
    if (!pool || pool->owner_pid_ != getpid()) pool = new WorkerPool();
    return *pool;
  }

  // Runs fn(i) for every i < n on `threads` threads, the caller's included; returns when all are
  // done. fn must not throw. Calls from several threads at once run one after another.
  void run(size_t n, size_t threads, const std::function<void(size_t)>& fn) {
    threads = std::min(threads, n);
    if (threads <= 1) {
      for (size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> one_job(job_mutex_);
    const size_t helpers = threads - 1;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (workers_.size() < helpers) {
        workers_.emplace_back([this, index = workers_.size()] { work(index); });
        workers_.back().detach();
      }
      job_ = &fn;
      size_ = n;
      next_ = 0;
      helpers_wanted_ = helpers;
      helpers_done_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return helpers_done_ == helpers_wanted_; });
    job_ = nullptr;
  }

 private:
  WorkerPool() : owner_pid_(getpid()) {}

  void drain() {
    for (size_t i; (i = next_.fetch_add(1)) < size_;) (*job_)(i);
  }

  void work(size_t index) {
    size_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= helpers_wanted_) continue;
      lock.unlock();
      drain();
      lock.lock();
      if (++helpers_done_ == helpers_wanted_) done_.notify_one();
    }
  }

  const pid_t owner_pid_;
  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;      // guards the job description below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(size_t)>* job_ = nullptr;
  size_t size_ = 0;
  std::atomic<size_t> next_{0};
  size_t helpers_wanted_ = 0;
  size_t helpers_done_ = 0;
  size_t generation_ = 0;
};

}  // namespace z2z
