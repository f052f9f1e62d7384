#include "kernels.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE2__) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define CAMCORE_HAVE_SSE2 1
#endif
// AVX2 (+FMA) kernels are compiled with a function attribute, not a global flag, and used only
// when the CPU reports both at run time.
#if defined(CAMCORE_HAVE_SSE2) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CAMCORE_HAVE_AVX2 1
#define CAMCORE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace camcore::detail {
namespace {

void levels_scalar(const float* diff, const float* base, float fy, std::uint8_t* out, int n) {
    for (int x = 0; x < n; ++x) out[x] = level_of(diff[x], base[x], fy);
}

void blend_scalar(const std::uint16_t* ca, const std::uint16_t* b, const std::uint8_t* img, std::uint8_t* out,
                  int n) {
    for (int i = 0; i < n; ++i) out[i] = blend_of(ca[i], b[i], img[i]);
}

/// `first` is the index of ca[0] in the row, so that the pattern stays in phase.
void blend_const_tail(const std::uint16_t* ca, const std::uint16_t* pattern, const std::uint8_t* img,
                      std::uint8_t* out, int first, int n) {
    for (int i = first; i < n; ++i) out[i] = blend_of(ca[i], pattern[i % 16], img[i]);
}

void blend_const_scalar(const std::uint16_t* ca, const std::uint16_t* pattern, const std::uint8_t* img,
                        std::uint8_t* out, int n) {
    blend_const_tail(ca, pattern, img, out, 0, n);
}

#if defined(CAMCORE_HAVE_SSE2)

/// fma_emulated() on four lanes, in double.
inline __m128 sse2_values(const float* diff, const float* base, __m128d fy) noexcept {
    const __m128 d = _mm_loadu_ps(diff);
    const __m128 b = _mm_loadu_ps(base);
    const __m128d lo = _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(d), fy), _mm_cvtps_pd(b));
    const __m128d hi = _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(d, d)), fy), _mm_cvtps_pd(_mm_movehl_ps(b, b)));
    return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
}

inline __m128i sse2_quantize(__m128 v) noexcept {
    __m128 t = _mm_mul_ps(v, _mm_set1_ps(255.0f));
    t = _mm_max_ps(t, _mm_setzero_ps());  // NaN -> 0: maxps returns the second operand
    t = _mm_min_ps(t, _mm_set1_ps(255.0f));
    return _mm_cvttps_epi32(t);
}

void levels_sse2(const float* diff, const float* base, float fy, std::uint8_t* out, int n) {
    const __m128d f = _mm_set1_pd(static_cast<double>(fy));
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        const __m128i a = _mm_packs_epi32(sse2_quantize(sse2_values(diff + x, base + x, f)),
                                          sse2_quantize(sse2_values(diff + x + 4, base + x + 4, f)));
        const __m128i b = _mm_packs_epi32(sse2_quantize(sse2_values(diff + x + 8, base + x + 8, f)),
                                          sse2_quantize(sse2_values(diff + x + 12, base + x + 12, f)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x), _mm_packus_epi16(a, b));
    }
    levels_scalar(diff + x, base + x, fy, out + x, n - x);
}

/// blend_of()'s rounding of t = the biased sum: (t + 1 + bit8(t)) >> 8 = avg(t, bit8(t)) >> 7.
inline __m128i sse2_round(__m128i t) noexcept {
    const __m128i bit8 = _mm_and_si128(_mm_srli_epi16(t, 8), _mm_set1_epi16(1));
    return _mm_srli_epi16(_mm_avg_epu16(t, bit8), 7);
}

inline __m128i sse2_blend8(__m128i ca, __m128i b, __m128i p_shifted) noexcept {
    return sse2_round(_mm_add_epi16(ca, _mm_mulhi_epu16(p_shifted, b)));  // ca + (p << 8) * b >> 16
}

void blend_const_sse2(const std::uint16_t* ca, const std::uint16_t* pattern, const std::uint8_t* img,
                      std::uint8_t* out, int n) {
    const __m128i zero = _mm_setzero_si128();
    const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pattern));
    const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pattern + 8));
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(img + i));
        const __m128i c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ca + i));
        const __m128i c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ca + i + 8));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm_packus_epi16(sse2_blend8(c0, b0, _mm_unpacklo_epi8(zero, p)),
                                          sse2_blend8(c1, b1, _mm_unpackhi_epi8(zero, p))));
    }
    blend_const_tail(ca, pattern, img, out, i, n);
}

void blend_sse2(const std::uint16_t* ca, const std::uint16_t* b, const std::uint8_t* img, std::uint8_t* out,
                int n) {
    const __m128i zero = _mm_setzero_si128();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(img + i));
        const __m128i c0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ca + i));
        const __m128i c1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ca + i + 8));
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i));
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i + 8));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm_packus_epi16(sse2_blend8(c0, b0, _mm_unpacklo_epi8(zero, p)),
                                          sse2_blend8(c1, b1, _mm_unpackhi_epi8(zero, p))));
    }
    blend_scalar(ca + i, b + i, img + i, out + i, n - i);
}

#endif  // CAMCORE_HAVE_SSE2

#if defined(CAMCORE_HAVE_AVX2)

CAMCORE_TARGET_AVX2 inline __m256i avx2_levels8(const float* diff, const float* base, __m256 fy) noexcept {
    // A true fused multiply-add, as in OpenCV's IPP resize.
    __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(diff), fy, _mm256_loadu_ps(base));
    t = _mm256_mul_ps(t, _mm256_set1_ps(255.0f));
    t = _mm256_max_ps(t, _mm256_setzero_ps());  // NaN -> 0
    t = _mm256_min_ps(t, _mm256_set1_ps(255.0f));
    return _mm256_cvttps_epi32(t);
}

CAMCORE_TARGET_AVX2 void levels_avx2(const float* diff, const float* base, float fy, std::uint8_t* out, int n) {
    const __m256 f = _mm256_set1_ps(fy);
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        // packs works per 128-bit lane: reorder the 64-bit quarters to get lanes 0..15 in order.
        const __m256i s16 = _mm256_permute4x64_epi64(
            _mm256_packs_epi32(avx2_levels8(diff + x, base + x, f), avx2_levels8(diff + x + 8, base + x + 8, f)), 0xD8);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x),
                         _mm_packus_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1)));
    }
    levels_scalar(diff + x, base + x, fy, out + x, n - x);
}

/// 16 bytes of blend_of() in the order in which unpack/pack work on 256-bit registers: the image
/// bytes of each 128-bit lane's low (or high) half, p << 8, and their biased colour lanes.
/// avx2_levels8() without the clamps: NaN cannot occur and the packs saturate to [0, 255].
CAMCORE_TARGET_AVX2 inline __m256i avx2_bounded_levels8(const float* diff, const float* base, __m256 fy) noexcept {
    const __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(diff), fy, _mm256_loadu_ps(base));
    return _mm256_cvttps_epi32(_mm256_mul_ps(t, _mm256_set1_ps(255.0f)));
}

CAMCORE_TARGET_AVX2 void levels_bounded_avx2(const float* diff, const float* base, float fy, std::uint8_t* out,
                                             int n) {
    const __m256 f = _mm256_set1_ps(fy);
    int x = 0;
    for (; x + 32 <= n; x += 32) {
        // packs and packus work per 128-bit lane: 32 levels come out with their 32-bit quarters
        // in the order 0 2 4 6 1 3 5 7, which one cross-lane permute undoes.
        const __m256i a = _mm256_packs_epi32(avx2_bounded_levels8(diff + x, base + x, f),
                                             avx2_bounded_levels8(diff + x + 8, base + x + 8, f));
        const __m256i b = _mm256_packs_epi32(avx2_bounded_levels8(diff + x + 16, base + x + 16, f),
                                             avx2_bounded_levels8(diff + x + 24, base + x + 24, f));
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + x),
                            _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order));
    }
    levels_avx2(diff + x, base + x, fy, out + x, n - x);
}

CAMCORE_TARGET_AVX2 inline __m256i avx2_blend16(__m256i ca, __m256i w, __m256i p_shifted) noexcept {
    const __m256i t = _mm256_add_epi16(ca, _mm256_mulhi_epu16(p_shifted, w));
    const __m256i bit8 = _mm256_and_si256(_mm256_srli_epi16(t, 8), _mm256_set1_epi16(1));
    return _mm256_srli_epi16(_mm256_avg_epu16(t, bit8), 7);
}

/// The colour lanes of bytes [0, 8) + [16, 24) of a 32-byte block (lane order of unpacklo).
CAMCORE_TARGET_AVX2 inline __m256i avx2_lanes(const std::uint16_t* ca) noexcept {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ca))),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(ca + 16)), 1);
}

/// 32 output bytes: unpacking the image against zero gives p << 8 per 128-bit lane, and packing
/// the two halves back restores the byte order, so no cross-lane permute is needed.
CAMCORE_TARGET_AVX2 inline void avx2_blend32(const std::uint16_t* ca, __m256i w_lo, __m256i w_hi,
                                             const std::uint8_t* img, std::uint8_t* out) noexcept {
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(img));
    const __m256i zero = _mm256_setzero_si256();
    const __m256i lo = avx2_blend16(avx2_lanes(ca), w_lo, _mm256_unpacklo_epi8(zero, p));
    const __m256i hi = avx2_blend16(avx2_lanes(ca + 8), w_hi, _mm256_unpackhi_epi8(zero, p));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_packus_epi16(lo, hi));
}

CAMCORE_TARGET_AVX2 void blend_avx2(const std::uint16_t* ca, const std::uint16_t* b, const std::uint8_t* img,
                                    std::uint8_t* out, int n) {
    int i = 0;
    for (; i + 32 <= n; i += 32) avx2_blend32(ca + i, avx2_lanes(b + i), avx2_lanes(b + i + 8), img + i, out + i);
    blend_scalar(ca + i, b + i, img + i, out + i, n - i);
}

CAMCORE_TARGET_AVX2 void blend_const_avx2(const std::uint16_t* ca, const std::uint16_t* pattern,
                                          const std::uint8_t* img, std::uint8_t* out, int n) {
    // The pattern repeats every 16 bytes, so the lane order of unpack leaves it unchanged.
    const __m256i w_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pattern)));
    const __m256i w_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pattern + 8)));
    int i = 0;
    for (; i + 32 <= n; i += 32) avx2_blend32(ca + i, w_lo, w_hi, img + i, out + i);
    blend_const_tail(ca, pattern, img, out, i, n);
}

bool cpu_has_avx2() noexcept {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#endif  // CAMCORE_HAVE_AVX2

constexpr Kernels kScalar{Simd::Scalar, levels_scalar, levels_scalar, blend_scalar, blend_const_scalar};
#if defined(CAMCORE_HAVE_SSE2)
constexpr Kernels kSse2{Simd::SSE2, levels_sse2, levels_sse2, blend_sse2, blend_const_sse2};
#endif
#if defined(CAMCORE_HAVE_AVX2)
constexpr Kernels kAvx2{Simd::AVX2, levels_avx2, levels_bounded_avx2, blend_avx2, blend_const_avx2};
#endif

Simd best_supported() noexcept {
#if defined(CAMCORE_HAVE_AVX2)
    if (cpu_has_avx2()) return Simd::AVX2;
#endif
#if defined(CAMCORE_HAVE_SSE2)
    return Simd::SSE2;
#else
    return Simd::Scalar;
#endif
}

const Kernels* kernels_for(Simd level) noexcept {
    switch (level) {
#if defined(CAMCORE_HAVE_AVX2)
        case Simd::AVX2:
            return &kAvx2;
#endif
#if defined(CAMCORE_HAVE_SSE2)
        case Simd::SSE2:
            return &kSse2;
#endif
        default:
            return &kScalar;
    }
}

Simd capped(Simd level) noexcept {
    const Simd best = best_supported();
    return static_cast<int>(level) < static_cast<int>(best) ? level : best;
}

Simd initial_level() noexcept {
    const char* env = std::getenv("CAMCORE_SIMD");
    if (env && std::strcmp(env, "scalar") == 0) return Simd::Scalar;
    if (env && std::strcmp(env, "sse2") == 0) return capped(Simd::SSE2);
    return best_supported();
}

std::atomic<const Kernels*>& current() noexcept {
    static std::atomic<const Kernels*> k{kernels_for(initial_level())};
    return k;
}

}  // namespace

const Kernels& kernels() noexcept { return *current().load(std::memory_order_relaxed); }

}  // namespace camcore::detail

namespace camcore {

Simd simd() noexcept { return detail::kernels().level; }

Simd set_simd(Simd level) noexcept {
    const detail::Kernels* k = detail::kernels_for(detail::capped(level));
    detail::current().store(k, std::memory_order_relaxed);
    return k->level;
}

const char* simd_name(Simd level) noexcept {
    switch (level) {
        case Simd::AVX2:
            return "avx2";
        case Simd::SSE2:
            return "sse2";
        default:
            return "scalar";
    }
}

}  // namespace camcore
