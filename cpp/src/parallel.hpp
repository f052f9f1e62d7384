// Internal: split [0, rows) into contiguous chunks over std::threads.
#pragma once

#include <algorithm>
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

/// Calls fn(begin, end) on disjoint row ranges covering [0, rows); the calling thread takes the
/// first range. The result never depends on the thread count. Rethrows a worker's exception.
template <class Fn>
void parallel_rows(int rows, int threads, Fn&& fn) {
    threads = std::max(1, std::min(threads, rows));
    if (threads == 1) {
        fn(0, rows);
        return;
    }
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(threads));
    auto bounds = [&](int t) { return static_cast<int>(static_cast<long long>(rows) * t / threads); };
    pool.reserve(static_cast<std::size_t>(threads - 1));
    for (int t = 1; t < threads; ++t) {
        pool.emplace_back([&, t] {
            try {
                fn(bounds(t), bounds(t + 1));
            } catch (...) {
                errors[static_cast<std::size_t>(t)] = std::current_exception();
            }
        });
    }
    try {
        fn(0, bounds(1));
    } catch (...) {
        errors[0] = std::current_exception();
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace camcore::detail
