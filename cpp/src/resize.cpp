#include "camcore/resize.hpp"

#include <cmath>
#include <stdexcept>

#include "kernels.hpp"
#include "parallel.hpp"

namespace camcore {
namespace {

using detail::fma_emulated;

constexpr int kEmpty = 0;
constexpr int kBusy = 1;
constexpr int kReady = 2;

}  // namespace

LinearAxis LinearAxis::make(int src_size, int dst_size) {
    if (src_size <= 0 || dst_size <= 0) throw std::invalid_argument("resize: sizes must be positive");
    LinearAxis a;
    a.i0.resize(static_cast<std::size_t>(dst_size));
    a.i1.resize(a.i0.size());
    a.frac.resize(a.i0.size());
    const double scale = 1.0 / (static_cast<double>(dst_size) / src_size);  // as cv::resize
    for (int d = 0; d < dst_size; ++d) {
        const double s = (d + 0.5) * scale - 0.5;
        int i = static_cast<int>(std::floor(s));
        double f = s - i;
        if (i < 0) {
            i = 0;
            f = 0.0;
        }
        if (i >= src_size - 1) {
            i = src_size - 1;
            f = 0.0;
        }
        a.i0[static_cast<std::size_t>(d)] = i;
        a.i1[static_cast<std::size_t>(d)] = i + 1 < src_size ? i + 1 : src_size - 1;
        a.frac[static_cast<std::size_t>(d)] = static_cast<float>(f);
    }
    return a;
}

BilinearSampler::BilinearSampler(ConstMapView src, int dst_height, int dst_width)
    : src_(src) {
    if (src.empty()) throw std::invalid_argument("resize: empty source map");
    x_ = LinearAxis::make(src.width, dst_width);
    y_ = LinearAxis::make(src.height, dst_height);
    const auto same = [this](int a, int b) {
        const std::size_t i = static_cast<std::size_t>(a);
        const std::size_t j = static_cast<std::size_t>(b);
        return x_.i0[i] == x_.i0[j] && x_.i1[i] == x_.i1[j] && x_.frac[i] == x_.frac[j];
    };
    while (same_left_ < dst_width && same(0, same_left_)) ++same_left_;
    while (same_right_ < dst_width - same_left_ && same(dst_width - 1, dst_width - 1 - same_right_)) ++same_right_;
    // Upsampling: each source row serves many destination rows, on whichever threads take them;
    // resample it once. Bounded at 2^21 floats (8 MB).
    constexpr std::size_t kSharedLimit = std::size_t{1} << 21;
    if (src.height <= dst_height &&
        static_cast<std::size_t>(src.height) * static_cast<std::size_t>(dst_width) <= kSharedLimit) {
        shared_ = std::make_shared<SharedRows>();
        shared_->rows.resize(static_cast<std::size_t>(src.height) * static_cast<std::size_t>(dst_width));
        shared_->state = std::make_unique<std::atomic<int>[]>(static_cast<std::size_t>(src.height));
        for (int r = 0; r < src.height; ++r) shared_->state[static_cast<std::size_t>(r)].store(kEmpty);
    }
}

void BilinearSampler::resample_row(int r, float* out) const noexcept {
    const float* s = src_.row(r);
    const int* i0 = x_.i0.data();
    const int* i1 = x_.i1.data();
    const float* fx = x_.frac.data();
    const int w = dst_width();
    for (int x = 0; x < w; ++x) {
        const float a = s[i0[x]];
        out[x] = fma_emulated(s[i1[x]] - a, fx[x], a);
    }
}

const float* BilinearSampler::shared_row(int r, int keep, Cache& cache) const {
    float* row = shared_->rows.data() + static_cast<std::size_t>(r) * x_.i0.size();
    std::atomic<int>& state = shared_->state[static_cast<std::size_t>(r)];
    int expected = kEmpty;
    if (state.load(std::memory_order_acquire) == kReady) return row;
    if (state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
        resample_row(r, row);
        state.store(kReady, std::memory_order_release);
        return row;
    }
    return expected == kReady ? row : horizontal(r, keep, cache);  // another thread is on it
}

const float* BilinearSampler::horizontal(int r, int keep, Cache& cache) const {
    for (int k = 0; k < 2; ++k)
        if (cache.source_row[k] == r) return cache.rows[k].data();
    // Reuse the slot that does not hold `keep` (the other row of the current output row).
    const int k = cache.source_row[0] == keep ? 1 : 0;
    auto& buf = cache.rows[k];
    buf.resize(x_.i0.size());
    resample_row(r, buf.data());
    cache.source_row[k] = r;
    return buf.data();
}

BilinearSampler::RowPair BilinearSampler::pair(int y, Cache& cache) const {
    const std::size_t yi = static_cast<std::size_t>(y);
    const int r0 = y_.i0[yi];
    const int r1 = y_.i1[yi];
    const float fy = y_.frac[yi];
    if (shared_) {
        if (cache.pair[0] != r0 || cache.pair[1] != r1) {
            const float* h0 = shared_row(r0, r1, cache);
            const float* h1 = shared_row(r1, r0, cache);
            const std::size_t w = x_.i0.size();
            cache.diff.resize(w);
            for (std::size_t x = 0; x < w; ++x) cache.diff[x] = h1[x] - h0[x];
            cache.shared_base = h0;
            cache.pair[0] = r0;
            cache.pair[1] = r1;
        }
        return {cache.diff.data(), cache.shared_base, fy};
    }
    if (cache.pair[0] != r0 || cache.pair[1] != r1) {
        const float* h0 = horizontal(r0, r1, cache);
        const float* h1 = horizontal(r1, r0, cache);
        const std::size_t w = x_.i0.size();
        cache.diff.resize(w);
        cache.base.resize(w);
        for (std::size_t x = 0; x < w; ++x) {
            cache.diff[x] = h1[x] - h0[x];
            cache.base[x] = h0[x];
        }
        cache.pair[0] = r0;
        cache.pair[1] = r1;
    }
    return {cache.diff.data(), cache.base.data(), fy};
}

bool BilinearSampler::same_row(int a, int b) const noexcept {
    const std::size_t i = static_cast<std::size_t>(a);
    const std::size_t j = static_cast<std::size_t>(b);
    return y_.i0[i] == y_.i0[j] && y_.i1[i] == y_.i1[j] && y_.frac[i] == y_.frac[j];
}

void BilinearSampler::row(int y, float* out, Cache& cache) const {
    const RowPair p = pair(y, cache);
    const int w = dst_width();
    for (int x = 0; x < w; ++x) out[x] = detail::fma_emulated(p.diff[x], p.fy, p.base[x]);
}

void resize_bilinear(ConstMapView src, MapView dst, int threads) {
    if (src.empty() || dst.empty()) throw std::invalid_argument("resize: empty source or destination");
    const BilinearSampler sampler(src, dst.height, dst.width);
    const int n = detail::thread_count(threads, static_cast<std::size_t>(dst.height) * dst.width);
    detail::parallel_rows(dst.height, n, [&](int y0, int y1) {
        BilinearSampler::Cache cache;
        for (int y = y0; y < y1; ++y) sampler.row(y, dst.row(y), cache);
    });
}

}  // namespace camcore
