// Bilinear resizing with OpenCV's INTER_LINEAR sampling grid.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "camcore/view.hpp"

namespace camcore {

/// The two source taps of every destination index along one axis.
///
/// Half-pixel centres like cv::resize(INTER_LINEAR): s = (d + 0.5) * src/dst - 0.5, computed
/// in double; i0 = floor(s), frac = s - i0, clamped at the borders (frac = 0 there).
struct LinearAxis {
    std::vector<int> i0;      ///< first tap
    std::vector<int> i1;      ///< second tap, min(i0 + 1, src - 1)
    std::vector<float> frac;  ///< weight of the second tap, in [0, 1)

    static LinearAxis make(int src_size, int dst_size);
};

/// Samples a small float map onto a larger (or smaller) grid one output row at a time.
///
/// Rounding matches OpenCV's float32 INTER_LINEAR (IPP path, used by the x86 opencv-python
/// wheels) bit for bit when both source dimensions are >= 2:
///     h_r(x) = fma(S[r][i1] - S[r][i0], fx, S[r][i0])       per source row r
///     D(y,x) = fma(h_{j1}(x) - h_{j0}(x), fy, h_{j0}(x))
/// Maps with a single row or column differ from cv2 by at most a few ulp.
/// The fused multiply-adds use FMA instructions where the CPU has them (picked at run time) and
/// are otherwise evaluated in double precision, where the product is exact, so the library
/// builds for any x86-64 / aarch64 baseline. The vertical step of a row is
/// D(x) = fma(diff(x), fy, base(x)) with the two float rows of `RowPair`.
class BilinearSampler {
public:
    BilinearSampler(ConstMapView src, int dst_height, int dst_width);

    int dst_height() const noexcept { return static_cast<int>(y_.i0.size()); }
    int dst_width() const noexcept { return static_cast<int>(x_.i0.size()); }

    /// Per-thread scratch, reused across rows: horizontally resampled source rows and the
    /// double rows of the current pair of source rows.
    struct Cache {
        std::vector<float> rows[2];
        int source_row[2] = {-1, -1};
        std::vector<float> diff, base;  // h_{j1} - h_{j0}, h_{j0}
        const float* shared_base = nullptr;  // h_{j0} when the sampler shares its rows
        int pair[2] = {-1, -1};

        /// Drop the cached rows (keeps the buffers) before sampling another map.
        void forget() noexcept { source_row[0] = source_row[1] = pair[0] = pair[1] = -1; }
    };

    /// The vertical step of destination row y: D(x) = fma(diff[x], fy, base[x]).
    struct RowPair {
        const float* diff;
        const float* base;
        float fy;
    };
    RowPair pair(int y, Cache& cache) const;

    /// Whether destination rows a and b are identical: the same source rows and weight (the
    /// clamped rows at the top and bottom edges, for example).
    bool same_row(int a, int b) const noexcept;

    /// How many destination columns at the left edge, and then at the right edge, equal the
    /// edge column itself (the clamped columns): those have one value per row.
    int same_columns_left() const noexcept { return same_left_; }
    int same_columns_right() const noexcept { return same_right_; }

    /// Writes destination row y (dst_width() floats) into `out`.
    void row(int y, float* out, Cache& cache) const;

private:
    const float* horizontal(int source_row, int keep, Cache& cache) const;
    void resample_row(int source_row, float* out) const noexcept;
    const float* shared_row(int source_row, int keep, Cache& cache) const;

    /// Source rows resampled horizontally once for all threads (when upsampling a map with few
    /// rows): the first thread to need a row computes it here; a thread that finds it being
    /// computed makes its own copy in its Cache instead of waiting.
    struct SharedRows {
        std::vector<float> rows;                   // src.height x dst_width
        std::unique_ptr<std::atomic<int>[]> state;  // per source row: kEmpty, kBusy or kReady
    };

    ConstMapView src_;
    LinearAxis x_;
    LinearAxis y_;
    int same_left_ = 0;
    int same_right_ = 0;
    std::shared_ptr<SharedRows> shared_;
};

/// Resize `src` into `dst` (any sizes >= 1), splitting rows over `threads` (0 = all cores).
void resize_bilinear(ConstMapView src, MapView dst, int threads = 1);

}  // namespace camcore
