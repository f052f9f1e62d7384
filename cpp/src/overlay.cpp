#include "camcore/overlay.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "camcore/resize.hpp"
#include "parallel.hpp"

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define CAMCORE_HAVE_SSE2 1
#endif

namespace camcore {
namespace {

/// blend[c * 256 + p] = cv2.addWeighted(c, alpha, p, 1 - alpha, 0) for one channel value pair:
/// saturate(round_half_even(fmaf(c, alpha, p * (1 - alpha)))), all in float32 like OpenCV.
/// Only colour values that occur in `table` get a row.
std::vector<std::uint8_t> blend_table(double alpha, const std::array<std::array<std::uint8_t, 3>, 256>& table) {
    const float a = static_cast<float>(alpha);
    const float b = static_cast<float>(1.0 - alpha);
    std::array<bool, 256> used{};
    for (const auto& c : table) used[c[0]] = used[c[1]] = used[c[2]] = true;
    std::array<double, 256> pb{};
    for (std::size_t p = 0; p < 256; ++p) pb[p] = static_cast<double>(static_cast<float>(p) * b);
    // Adding and subtracting 1.5 * 2^23 rounds a float in [0, 2^22) to the nearest integer, ties
    // to even (cvRound), without a libm call, so the loop below vectorizes.
    constexpr float kRound = 12582912.0f;
    std::vector<std::uint8_t> blend(256 * 256);
    for (int c = 0; c < 256; ++c) {
        if (!used[static_cast<std::size_t>(c)]) continue;
        const double ca = static_cast<double>(c) * a;  // exact: 8 x 24 bits
        std::uint8_t* row = blend.data() + c * 256;
        for (std::size_t p = 0; p < 256; ++p) {
            const float t = static_cast<float>(ca + pb[p]);  // == fmaf(c, a, p * b)
            float r = (t + kRound) - kRound;
            r = r < 255.0f ? r : 255.0f;  // t >= 0 always; > 255 only by rounding error
            row[p] = static_cast<std::uint8_t>(r);
        }
    }
    return blend;
}

/// level[x] = quantize(heat[x]) for a whole row; SSE2 (the x86-64 baseline) where available.
void quantize_row(const float* heat, std::uint8_t* level, int width) noexcept {
    int x = 0;
#if defined(CAMCORE_HAVE_SSE2)
    const __m128 zero = _mm_setzero_ps();
    const __m128 one = _mm_set1_ps(1.0f);
    const __m128 scale = _mm_set1_ps(255.0f);
    auto four = [&](const float* p) {
        __m128 v = _mm_max_ps(_mm_loadu_ps(p), zero);  // NaN -> 0 (maxps returns the 2nd operand)
        v = _mm_min_ps(v, one);
        return _mm_cvttps_epi32(_mm_mul_ps(v, scale));  // truncation, like np.uint8
    };
    for (; x + 16 <= width; x += 16) {
        const __m128i lo = _mm_packs_epi32(four(heat + x), four(heat + x + 4));
        const __m128i hi = _mm_packs_epi32(four(heat + x + 8), four(heat + x + 12));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(level + x), _mm_packus_epi16(lo, hi));
    }
#endif
    for (; x < width; ++x) level[x] = quantize(heat[x]);
}

}  // namespace

std::vector<float> prepare_cam(ConstMapView cam, bool normalize) {
    if (cam.empty()) throw std::invalid_argument("overlay: empty cam");
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
    }
    const bool scale = normalize && hi > lo;
    const float range = hi - lo;
    float* d = out.data();
    for (int y = 0; y < cam.height; ++y) {
        const float* s = cam.row(y);
        for (int x = 0; x < cam.width; ++x, ++d) {
            const float v = s[x];
            if (std::isfinite(v))
                *d = scale ? (v - lo) / range : (normalize ? 0.0f : v);
            else
                *d = v > 0.0f ? 1.0f : 0.0f;  // +Inf -> 1; -Inf and NaN -> 0
        }
    }
    return out;
}

void overlay(ConstImageView image, ConstMapView cam, ImageView out, const OverlayOptions& options) {
    if (image.empty()) throw std::invalid_argument("overlay: empty image");
    if (cam.empty()) throw std::invalid_argument("overlay: empty cam");
    if (out.height != image.height || out.width != image.width)
        throw std::invalid_argument("overlay: out must have the image's size");
    if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
        throw std::invalid_argument("overlay: alpha must be in [0, 1], got " + std::to_string(options.alpha));
    const Colormap& cmap = options.colormap ? *options.colormap : get_colormap("jet");

    const auto table = ordered_table(cmap, options.order);
    const std::vector<std::uint8_t> blend = blend_table(options.alpha, table);
    const std::vector<float> prepared = prepare_cam(cam, options.normalize);
    const BilinearSampler sampler(ConstMapView::contiguous(prepared.data(), cam.height, cam.width),
                                  image.height, image.width);

    const int width = image.width;
    const int n = detail::thread_count(options.threads,
                                       static_cast<std::size_t>(image.height) * static_cast<std::size_t>(width));
    // Per quantized level q: its three colour values packed into one word (fewer loads per pixel).
    std::array<std::uint32_t, 256> packed{};
    for (std::size_t q = 0; q < 256; ++q)
        packed[q] = table[q][0] | (std::uint32_t{table[q][1]} << 8) | (std::uint32_t{table[q][2]} << 16);

    detail::parallel_rows(image.height, n, [&](int y0, int y1) {
        BilinearSampler::Cache cache;
        std::vector<float> heat(static_cast<std::size_t>(width));
        std::vector<std::uint8_t> level(static_cast<std::size_t>(width));
        const std::uint8_t* lut = blend.data();
        for (int y = y0; y < y1; ++y) {
            sampler.row(y, heat.data(), cache);
            quantize_row(heat.data(), level.data(), width);
            const std::uint8_t* src = image.row(y);
            std::uint8_t* dst = out.row(y);
            for (int x = 0; x < width; ++x) {
                const std::uint32_t c = packed[level[static_cast<std::size_t>(x)]];
                const int i = 3 * x;
                const std::uint8_t p0 = src[i], p1 = src[i + 1], p2 = src[i + 2];
                dst[i + 0] = lut[((c & 0xffu) << 8) | p0];
                dst[i + 1] = lut[(c & 0xff00u) | p1];
                dst[i + 2] = lut[((c >> 8) & 0xff00u) | p2];
            }
        }
    });
}

}  // namespace camcore
