// Which instruction set the row kernels use. Picked once at run time from the CPU, so one build
// runs on any x86-64 (SSE2 baseline) and uses AVX2 + FMA where present; no -march flags needed.
// Other architectures use the portable scalar loops.
#pragma once

#include <cstdint>

namespace camcore {

enum class Simd : std::uint8_t { Scalar, SSE2, AVX2 };

/// The kernels in use: the best the CPU supports, unless overridden by set_simd() or by the
/// environment variable CAMCORE_SIMD=scalar|sse2|avx2 (read once).
Simd simd() noexcept;

/// Use `level` (capped at what the CPU supports) from now on; returns the level now in use.
/// Every level gives the same pixels (the AVX2 level computes the resize's fused multiply-add
/// with an FMA instruction, the others emulate it exactly in double, which can differ only by a
/// double rounding, at odds of about 2^-29 per pixel); this exists for tests and benchmarks.
Simd set_simd(Simd level) noexcept;

const char* simd_name(Simd level) noexcept;

}  // namespace camcore
