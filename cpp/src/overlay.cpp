#include "camcore/overlay.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "camcore/resize.hpp"
#include "kernels.hpp"
#include "parallel.hpp"

namespace camcore {
namespace {

/// Per quantized level q: the premultiplied colour of each channel, round(256 * w_q * c), plus
/// detail::kRoundingBias, as four uint16 lanes (the 4th has colour 0), and the image weight
/// round(2^16 * (1 - w_q)) per lane (65535 for the 4th lane, which then keeps the image byte exactly).
struct BlendTables {
    std::array<std::uint64_t, 256> colour{};
    std::array<std::uint64_t, 256> weight{};
    bool per_level = false;  // false: weight[q] is the same for every q
};

std::uint64_t lanes(std::uint16_t a, std::uint16_t b, std::uint16_t c, std::uint16_t d) noexcept {
    return std::uint64_t{a} | (std::uint64_t{b} << 16) | (std::uint64_t{c} << 32) | (std::uint64_t{d} << 48);
}

BlendTables blend_tables(const OverlayOptions& options) {
    const Colormap& cmap = options.colormap ? *options.colormap : get_colormap("jet");
    const auto table = ordered_table(cmap, options.order);
    // cv2.addWeighted works with float32 weights alpha and beta = 1 - alpha.
    const double a = static_cast<float>(options.alpha);
    const double b = static_cast<float>(1.0 - options.alpha);
    BlendTables t;
    t.per_level = options.alpha_from_cam;
    for (std::size_t q = 0; q < 256; ++q) {
        const double wa = options.alpha_from_cam ? options.alpha * static_cast<double>(q) / 255.0 : a;
        const double wb = options.alpha_from_cam ? 1.0 - wa : b;
        const auto premul = [&](std::uint8_t c) {
            return static_cast<std::uint16_t>(std::lround(256.0 * wa * c) + detail::kRoundingBias);
        };
        const auto image_weight = static_cast<std::uint16_t>(std::min<long>(65535, std::lround(65536.0 * wb)));
        t.colour[q] = lanes(premul(table[q][0]), premul(table[q][1]), premul(table[q][2]), premul(0));
        t.weight[q] = lanes(image_weight, image_weight, image_weight, 65535);
    }
    return t;
}

void check_range(const std::optional<ValueRange>& range) {
    if (range && !(std::isfinite(range->lo) && std::isfinite(range->hi) && range->lo < range->hi))
        throw std::invalid_argument("overlay: value_range must be finite with lo < hi, got (" +
                                    std::to_string(range->lo) + ", " + std::to_string(range->hi) + ")");
}

/// The colour lanes of `count` pixels of one level: a 16-pixel pattern copied block by block.
template <int C>
void fill(std::uint64_t lanes, std::uint16_t* colour, int count) noexcept {
    constexpr int kBlock = 16;
    std::uint16_t pattern[kBlock * C + 4];
    for (int i = 0; i < kBlock; ++i) std::memcpy(pattern + C * i, &lanes, 8);
    int x = 0;
    for (; x + kBlock <= count; x += kBlock, colour += kBlock * C) std::memcpy(colour, pattern, sizeof pattern - 8);
    for (; x < count; ++x, colour += C) std::memcpy(colour, &lanes, 8);
}

/// The colour (and, per level, weight) lanes of a row: 8-byte table entries stored C lanes apart,
/// each store overwriting the spare 4th lane of the one before when C = 3. The first `left` and
/// the last `right` pixels are known to have the level of the row's first and last pixel.
template <int C>
void lookup(const std::uint8_t* q, const BlendTables& tables, std::uint16_t* colour, std::uint16_t* weight,
            int width, int left, int right) noexcept {
    const std::uint64_t* ct = tables.colour.data();
    if (tables.per_level) {
        const std::uint64_t* wt = tables.weight.data();
        for (int x = 0; x < width; ++x, colour += C, weight += C) {
            std::memcpy(colour, &ct[q[x]], 8);
            std::memcpy(weight, &wt[q[x]], 8);
        }
        return;
    }
    fill<C>(ct[q[0]], colour, left);
    int x = left;
    colour += C * left;
    const int end = width - right;
    for (; x + 4 <= end; x += 4, colour += 4 * C) {
        std::memcpy(colour, &ct[q[x]], 8);
        std::memcpy(colour + C, &ct[q[x + 1]], 8);
        std::memcpy(colour + 2 * C, &ct[q[x + 2]], 8);
        std::memcpy(colour + 3 * C, &ct[q[x + 3]], 8);
    }
    for (; x < end; ++x, colour += C) std::memcpy(colour, &ct[q[x]], 8);
    if (right > 0) fill<C>(ct[q[width - 1]], colour, right);
}

template <int C>
struct Frame {
    View<const std::uint8_t, C> image;
    View<std::uint8_t, C> out;
    BilinearSampler sampler;
    bool bounded;  // the prepared map qualifies for Kernels::levels_bounded
};

bool bounded(const std::vector<float>& prepared) noexcept {
    return std::all_of(prepared.begin(), prepared.end(),
                       [](float v) { return std::fabs(v) < detail::kBoundedLevels; });  // prepared: finite
}

template <int C>
void run(std::size_t count, const View<const std::uint8_t, C>* images, const ConstMapView* cams,
         const View<std::uint8_t, C>* outs, const OverlayOptions& options) {
    if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
        throw std::invalid_argument("overlay: alpha must be in [0, 1], got " + std::to_string(options.alpha));
    if (options.normalize && options.value_range)
        throw std::invalid_argument("overlay: normalize and value_range are exclusive");
    check_range(options.value_range);
    for (std::size_t i = 0; i < count; ++i) {
        if (outs[i].height != images[i].height || outs[i].width != images[i].width)
            throw std::invalid_argument("overlay: out must have the image's size");
        if (cams[i].empty() && !images[i].empty()) throw std::invalid_argument("overlay: empty cam");
    }
    const BlendTables tables = blend_tables(options);

    // Per frame: the prepared cam and its sampler (small: the cam, not the frame, is copied).
    std::vector<std::vector<float>> prepared;
    std::vector<Frame<C>> frames;
    prepared.reserve(count);
    frames.reserve(count);
    std::size_t pixels = 0;
    int widest = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (images[i].empty()) continue;
        prepared.push_back(prepare_cam(cams[i], options.normalize, options.value_range));
        const ConstMapView cam = ConstMapView::contiguous(prepared.back().data(), cams[i].height, cams[i].width);
        frames.push_back({images[i], outs[i], BilinearSampler(cam, images[i].height, images[i].width),
                          bounded(prepared.back())});
        pixels += static_cast<std::size_t>(images[i].height) * static_cast<std::size_t>(images[i].width);
        widest = std::max(widest, images[i].width);
    }
    if (frames.empty()) return;
    std::vector<int> first_row(frames.size() + 1, 0);  // global row index of each frame's row 0
    for (std::size_t f = 0; f < frames.size(); ++f) first_row[f + 1] = first_row[f] + frames[f].image.height;

    const detail::Kernels& k = detail::kernels();
    const int n = detail::thread_count(options.threads, pixels);
    const std::size_t w = static_cast<std::size_t>(widest);
    std::uint16_t pattern[16];  // the image weights of 16 consecutive bytes, when constant
    for (int i = 0; i < 16; ++i)
        std::memcpy(&pattern[i], reinterpret_cast<const char*>(&tables.weight[0]) + 2 * (C == 4 ? i % 4 : 0), 2);

    // Per thread: row buffers and the sampler's cache, kept over the chunks the thread gets.
    struct alignas(64) Scratch {
        std::vector<std::uint8_t> level;
        std::vector<std::uint16_t> colour, weight;
        BilinearSampler::Cache cache;
        std::size_t frame = static_cast<std::size_t>(-1);  // the frame `cache` holds rows of
        int coloured = -1;  // the global row whose colour (and weight) lanes the buffers hold
    };
    std::vector<Scratch> scratch(static_cast<std::size_t>(n));
    const int rows = first_row.back();
    // Chunks: a few per thread for balance, each long enough that the sampler's cache pays off.
    const int chunk = n == 1 ? rows : std::max(8, rows / (8 * n));
    detail::parallel_chunks(rows, n, chunk, [&](int t, int g0, int g1) {
        Scratch& s = scratch[static_cast<std::size_t>(t)];
        if (s.level.empty()) {
            s.level.resize(w);
            s.colour.resize(C * w + 4);  // +4: the last 8-byte store of a 3-channel row
            if (tables.per_level) s.weight.resize(C * w + 4);
        }
        std::size_t f = static_cast<std::size_t>(std::upper_bound(first_row.begin(), first_row.end(), g0) -
                                                 first_row.begin() - 1);
        for (int g = g0; g < g1; ++g) {
            while (g >= first_row[f + 1]) ++f;
            if (f != s.frame) {
                s.cache.forget();  // a new frame: other source rows
                s.frame = f;
            }
            const Frame<C>& frame = frames[f];
            const int y = g - first_row[f];
            const int width = frame.image.width;
            // Rows equal to the one before (the clamped edge rows) keep its colour lanes.
            if (s.coloured != g - 1 || y == 0 || !frame.sampler.same_row(y - 1, y)) {
                const auto p = frame.sampler.pair(y, s.cache);
                (frame.bounded ? k.levels_bounded : k.levels)(p.diff, p.base, p.fy, s.level.data(), width);
                lookup<C>(s.level.data(), tables, s.colour.data(), s.weight.data(), width,
                          frame.sampler.same_columns_left(), frame.sampler.same_columns_right());
            }
            s.coloured = g;
            if (tables.per_level)
                k.blend(s.colour.data(), s.weight.data(), frame.image.row(y), frame.out.row(y), C * width);
            else
                k.blend_const(s.colour.data(), pattern, frame.image.row(y), frame.out.row(y), C * width);
        }
    });
}

}  // namespace

std::vector<float> prepare_cam(ConstMapView cam, bool normalize, std::optional<ValueRange> range) {
    if (cam.empty()) throw std::invalid_argument("overlay: empty cam");
    check_range(range);
    std::vector<float> out(static_cast<std::size_t>(cam.height) * static_cast<std::size_t>(cam.width));
    float lo = std::numeric_limits<float>::infinity();
    float hi = -lo;
    if (normalize) {
        for (int y = 0; y < cam.height; ++y) {
            const float* s = cam.row(y);
            for (int x = 0; x < cam.width; ++x) {
                if (std::isfinite(s[x])) {
                    lo = s[x] < lo ? s[x] : lo;
                    hi = s[x] > hi ? s[x] : hi;
                }
            }
        }
    } else if (range) {
        lo = range->lo;
        hi = range->hi;
    }
    const bool scale = (normalize || range) && hi > lo;
    const bool zero = normalize && !scale;  // a constant (or all non-finite) map
    const float span = hi - lo;
    float* d = out.data();
    for (int y = 0; y < cam.height; ++y) {
        const float* s = cam.row(y);
        for (int x = 0; x < cam.width; ++x, ++d) {
            const float v = s[x];
            if (std::isfinite(v))
                *d = scale ? (v - lo) / span : (zero ? 0.0f : v);
            else
                *d = v > 0.0f ? 1.0f : 0.0f;  // +Inf -> 1; -Inf and NaN -> 0
        }
    }
    return out;
}

void overlay(ConstImageView image, ConstMapView cam, ImageView out, const OverlayOptions& options) {
    run<3>(1, &image, &cam, &out, options);
}

void overlay(ConstImage4View image, ConstMapView cam, Image4View out, const OverlayOptions& options) {
    run<4>(1, &image, &cam, &out, options);
}

void overlay_batch(std::size_t count, const ConstImageView* images, const ConstMapView* cams, const ImageView* outs,
                   const OverlayOptions& options) {
    run<3>(count, images, cams, outs, options);
}

void overlay_batch(std::size_t count, const ConstImage4View* images, const ConstMapView* cams,
                   const Image4View* outs, const OverlayOptions& options) {
    run<4>(count, images, cams, outs, options);
}

}  // namespace camcore
