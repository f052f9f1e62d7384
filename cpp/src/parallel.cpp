#include "parallel.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define CAMCORE_HAVE_ATFORK 1
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
#define CAMCORE_PAUSE() _mm_pause()
#else
#define CAMCORE_PAUSE() std::this_thread::yield()
#endif

namespace camcore::detail {
namespace {

using Clock = std::chrono::steady_clock;

/// How long a thread spins before it sleeps: a worker waiting for the next job (back-to-back
/// calls, e.g. video frames, then start at once) and a caller waiting for the workers to finish.
constexpr auto kSpin = std::chrono::microseconds(50);

template <class Ready>
bool spin_until(Ready ready) noexcept {
    const auto end = Clock::now() + kSpin;
    for (;;) {
        for (int i = 0; i < 32; ++i) {
            if (ready()) return true;
            CAMCORE_PAUSE();
        }
        if (Clock::now() >= end) return ready();
    }
}

/// Worker threads 1..size() run job i = their index; the caller is index 0. One job at a time.
class Pool {
public:
    /// The most workers the pool keeps; larger jobs start threads of their own.
    static int limit() noexcept {
        const int cores = static_cast<int>(std::thread::hardware_concurrency());
        return std::max(8, 4 * cores);
    }

    /// Runs the job on the pool, or returns false at once when another caller holds it.
    bool run(int n, void (*invoke)(void*, int) noexcept, void* context) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        if (n - 1 > limit()) return false;
        while (static_cast<int>(threads_.size()) < n - 1) {
            const int index = static_cast<int>(threads_.size()) + 1;
            const std::uint64_t seen = generation_.load(std::memory_order_relaxed);  // this job is the next
            threads_.emplace_back([this, index, seen] { work(index, seen); });
            threads_.back().detach();  // never joined: the pool lives as long as the process
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            invoke_ = invoke;
            context_ = context;
            participants_ = n;
            pending_.store(n - 1, std::memory_order_relaxed);
            generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        }
        wake_.notify_all();
        invoke(context, 0);
        if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
        }
        return true;
    }

private:
    void work(int index, std::uint64_t seen) noexcept {
        for (;;) {
            spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
            void (*invoke)(void*, int) noexcept = nullptr;
            void* context = nullptr;
            int participants = 0;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
                seen = generation_.load(std::memory_order_relaxed);
                invoke = invoke_;
                context = context_;
                participants = participants_;
            }
            if (index >= participants) continue;
            invoke(context, index);
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);  // the caller is spinning, or waiting under mutex_
                done_.notify_one();
            }
        }
    }

    std::mutex busy_;  // held by the caller whose job the pool runs
    std::vector<std::thread> threads_;

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    std::atomic<std::uint64_t> generation_{0};  // +1 per job
    void (*invoke_)(void*, int) noexcept = nullptr;
    void* context_ = nullptr;
    int participants_ = 0;
    std::atomic<int> pending_{0};  // workers of the current job still running
};

std::atomic<Pool*> pool{nullptr};
std::mutex pool_creation;

#if defined(CAMCORE_HAVE_ATFORK)
void forget_pool_in_child() noexcept {
    // The child has none of the workers (and the pool's mutexes may be held by threads that are
    // gone): leak the old pool and start a new one on first use.
    pool.store(nullptr, std::memory_order_relaxed);
}
#endif

Pool& the_pool() {
    Pool* p = pool.load(std::memory_order_acquire);
    if (p) return *p;
    std::lock_guard<std::mutex> lock(pool_creation);
    p = pool.load(std::memory_order_relaxed);
    if (!p) {
#if defined(CAMCORE_HAVE_ATFORK)
        static const bool registered = (pthread_atfork(nullptr, nullptr, forget_pool_in_child), true);
        (void)registered;
#endif
        p = new Pool();  // intentionally never deleted: detached workers may still reference it at exit
        pool.store(p, std::memory_order_release);
    }
    return *p;
}

/// The fallback when the pool is busy: threads started for this call only.
void run_spawned(int n, void (*invoke)(void*, int) noexcept, void* context) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(n - 1));
    for (int i = 1; i < n; ++i) threads.emplace_back([=] { invoke(context, i); });
    invoke(context, 0);
    for (auto& t : threads) t.join();
}

}  // namespace

void run_parallel(int n, void (*invoke)(void*, int) noexcept, void* context) {
    if (n <= 1) {
        invoke(context, 0);
        return;
    }
    if (!the_pool().run(n, invoke, context)) run_spawned(n, invoke, context);
}

}  // namespace camcore::detail
