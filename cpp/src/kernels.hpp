// Internal: the per-row inner loops of the overlay, in scalar, SSE2 and AVX2 versions that give
// bit-identical results. Everything else in the library is plain C++.
#pragma once

#include <cstdint>

#include "camcore/simd.hpp"

namespace camcore::detail {

/// The vertical bilinear step of one output pixel, a float32 fused multiply-add fma(diff, fy, base)
/// as OpenCV's IPP path computes it. Without FMA instructions it is evaluated in double, where
/// diff * fy is exact, so only the sum rounds (twice: equal to the fma except for astronomically
/// rare double-rounding cases).
inline float fma_emulated(float diff, float fy, float base) noexcept {
    return static_cast<float>(static_cast<double>(diff) * static_cast<double>(fy) + static_cast<double>(base));
}

/// level = uint8(trunc(clamp(255 * value, 0, 255))), NaN -> 0, like np.uint8(255 * np.clip(v, 0, 1)).
inline std::uint8_t level_of(float diff, float base, float fy) noexcept {
    const float v = fma_emulated(diff, fy, base);
    float t = v * 255.0f;
    t = t > 0.0f ? t : 0.0f;  // also NaN -> 0 (as maxps does)
    t = t < 255.0f ? t : 255.0f;
    return static_cast<std::uint8_t>(static_cast<int>(t));
}

/// Added to every premultiplied colour lane in the tables, so that the rounding below takes
/// one average and two shifts.
constexpr std::uint16_t kRoundingBias = 126;

/// The blend of one channel byte in 8.8 fixed point:
///   sum = ca + floor((p << 8) * b / 2^16)   with ca = round(256 * alpha * colour), b = round(2^16 * (1 - alpha))
///   out = sum / 256 rounded half to even (like cv2.addWeighted's cvRound).
/// `biased` is ca + kRoundingBias: with t = sum + 126 (< 2^16 since sum <= 65282),
///   out = (t + 1 + bit8(t)) >> 8
/// equals the half-to-even rounding of sum / 256 (checked for every sum): a tie (sum = 256k + 128)
/// rounds up exactly when k is odd, and the bias only carries into bit 8 when sum rounds up anyway.
/// The fixed-point error is below 0.01 of a level, so the result equals addWeighted's except on rare
/// near-ties (and exactly when alpha is a multiple of 1/256), and never differs by more than 1.
inline std::uint8_t blend_of(std::uint16_t biased, std::uint16_t b, std::uint8_t p) noexcept {
    const std::uint32_t product = ((static_cast<std::uint32_t>(p) << 8) * b) >> 16;
    const std::uint32_t t = (biased + product) & 0xffffu;
    const std::uint32_t r = (t + 1u + ((t >> 8) & 1u)) >> 8;
    return static_cast<std::uint8_t>(r > 255u ? 255u : r);
}

/// See Kernels::levels_bounded.
constexpr float kBoundedLevels = 1 << 20;

struct Kernels {
    Simd level;
    /// out[x] = level_of(diff[x], base[x], fy) for x < n.
    void (*levels)(const float* diff, const float* base, float fy, std::uint8_t* out, int n);
    /// The same for rows of a map whose values are finite and below kBoundedLevels in magnitude
    /// (so is every interpolated value, and 255 * value fits an int32: saturating packs clamp).
    void (*levels_bounded)(const float* diff, const float* base, float fy, std::uint8_t* out, int n);
    /// out[i] = blend_of(ca[i], b[i], img[i]) for i < n (n bytes; ca biased; out may alias img).
    void (*blend)(const std::uint16_t* ca, const std::uint16_t* b, const std::uint8_t* img, std::uint8_t* out,
                  int n);
    /// The same with one weight pattern for every 16 bytes: b[i] = pattern[i % 16].
    void (*blend_const)(const std::uint16_t* ca, const std::uint16_t* pattern, const std::uint8_t* img,
                        std::uint8_t* out, int n);
};

/// The kernels for the current camcore::simd() level.
const Kernels& kernels() noexcept;

}  // namespace camcore::detail
