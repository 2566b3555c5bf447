// A persistent pool of worker threads for the batch calls: starting threads on every call cost
// ~30 us each, as much as encoding thousands of ids.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
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
  // done. If fn throws, no index after the failing one is started, and the exception of the
  // lowest failing index is rethrown here once every thread has left fn (fn and what it
  // references live on the caller's stack). Calls from several threads at once run one after
  // another.
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
      error_ = nullptr;
      error_index_ = n;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return helpers_done_ == helpers_wanted_; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  WorkerPool() : owner_pid_(getpid()) {}

  // Never throws: an exception of fn is kept for run() to rethrow (one escaping a helper thread
  // would terminate the process).
  void drain() {
    for (size_t i; (i = next_.fetch_add(1)) < size_;) {
      try {
        (*job_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        next_ = size_;  // indices are handed out in order: every lower one has started already
        if (i < error_index_) {
          error_index_ = i;
          error_ = std::current_exception();
        }
      }
    }
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
  std::exception_ptr error_;  // of the lowest failing index, error_index_
  size_t error_index_ = 0;
};

}  // namespace z2z
