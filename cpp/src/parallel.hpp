// Internal: run row ranges on a persistent pool of worker threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace camcore::detail {

/// Threads to use for `work` element-operations: `requested` (0 = all cores), but never more
/// than one thread per `grain` operations, so tiny frames stay on the calling thread.
inline int thread_count(int requested, std::size_t work, std::size_t grain = 1 << 15) {
    int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
    const std::size_t by_work = std::max<std::size_t>(1, work / grain);
    return static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(n, by_work)));
}

/// Calls invoke(context, i) once for every i in [0, n), i = 0 on the calling thread, the others on
/// worker threads, and returns when all calls have returned. The workers are kept between calls
/// (a process-wide pool, created on first use; started afresh in a forked child); when the pool
/// is busy with another caller's job, this call uses threads of its own. `invoke` must not throw.
void run_parallel(int n, void (*invoke)(void* context, int i) noexcept, void* context);

/// Calls fn(i) for i in [0, n) as run_parallel does and rethrows the first exception (by index).
template <class Fn>
void run_indices(int n, Fn& fn) {
    if (n <= 1) {
        fn(0);
        return;
    }
    struct Context {
        Fn* fn;
        std::vector<std::exception_ptr> errors;
    } context{&fn, std::vector<std::exception_ptr>(static_cast<std::size_t>(n))};
    run_parallel(
        n,
        [](void* c, int i) noexcept {
            auto* ctx = static_cast<Context*>(c);
            try {
                (*ctx->fn)(i);
            } catch (...) {
                ctx->errors[static_cast<std::size_t>(i)] = std::current_exception();
            }
        },
        &context);
    for (auto& e : context.errors)
        if (e) std::rethrow_exception(e);
}

/// Calls fn(begin, end) on disjoint row ranges covering [0, rows), one contiguous range per
/// thread; the calling thread takes the first range. The result never depends on the thread count.
/// Rethrows a worker's exception.
template <class Fn>
void parallel_rows(int rows, int threads, Fn&& fn) {
    threads = std::max(1, std::min(threads, rows));
    if (threads == 1) {
        fn(0, rows);
        return;
    }
    auto bounds = [&](int t) { return static_cast<int>(static_cast<long long>(rows) * t / threads); };
    auto task = [&](int t) { fn(bounds(t), bounds(t + 1)); };
    run_indices(threads, task);
}

/// Calls fn(thread, begin, end) on disjoint ranges of at most `chunk` rows covering [0, rows),
/// handed out in order to whichever of the `threads` threads is free (thread in [0, threads); the
/// ranges one thread gets ascend). Balances the load when some cores are busy with other work.
template <class Fn>
void parallel_chunks(int rows, int threads, int chunk, Fn&& fn) {
    chunk = std::max(1, chunk);
    const int chunks = (rows + chunk - 1) / chunk;
    threads = std::max(1, std::min(threads, chunks));
    if (threads == 1) {
        if (rows > 0) fn(0, 0, rows);
        return;
    }
    std::atomic<int> next{0};
    auto task = [&](int t) {
        for (int c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
             c = next.fetch_add(1, std::memory_order_relaxed))
            fn(t, c * chunk, std::min(rows, (c + 1) * chunk));
    };
    run_indices(threads, task);
}

}  // namespace camcore::detail
