#include "camcore/contour.hpp"

#include <stdexcept>
#include <vector>

#include "camcore/resize.hpp"
#include "parallel.hpp"

namespace camcore {
namespace {

std::size_t area(int h, int w) { return static_cast<std::size_t>(h) * static_cast<std::size_t>(w); }

template <int C>
void paint_impl(ConstByteMapView where, View<std::uint8_t, C> image, std::array<std::uint8_t, 4> color,
                int threads) {
    if (where.height != image.height || where.width != image.width)
        throw std::invalid_argument("paint: the mask and the image differ in size");
    if (image.empty()) return;
    const int n = detail::thread_count(threads, area(image.height, image.width));
    detail::parallel_rows(image.height, n, [&](int y0, int y1) {
        for (int y = y0; y < y1; ++y) {
            const std::uint8_t* m = where.row(y);
            std::uint8_t* p = image.row(y);
            for (int x = 0; x < image.width; ++x)
                if (m[x])
                    for (int c = 0; c < C; ++c) p[C * x + c] = color[static_cast<std::size_t>(c)];
        }
    });
}

}  // namespace

void threshold_mask(ConstMapView cam, float level, ByteMapView mask, const MaskOptions& options) {
    if (mask.empty()) return;
    if (cam.empty()) throw std::invalid_argument("threshold_mask: empty cam");
    const std::vector<float> prepared = prepare_cam(cam, options.normalize, options.value_range);
    const BilinearSampler sampler(ConstMapView::contiguous(prepared.data(), cam.height, cam.width), mask.height,
                                  mask.width);
    const int n = detail::thread_count(options.threads, area(mask.height, mask.width));
    detail::parallel_rows(mask.height, n, [&](int y0, int y1) {
        BilinearSampler::Cache cache;
        std::vector<float> values(static_cast<std::size_t>(mask.width));
        for (int y = y0; y < y1; ++y) {
            sampler.row(y, values.data(), cache);
            std::uint8_t* m = mask.row(y);
            for (int x = 0; x < mask.width; ++x) m[x] = values[static_cast<std::size_t>(x)] >= level ? 1 : 0;
        }
    });
}

void outline(ConstByteMapView mask, ByteMapView out, int threads) {
    if (mask.height != out.height || mask.width != out.width)
        throw std::invalid_argument("outline: out must have the mask's size");
    if (mask.empty()) return;
    const int h = mask.height;
    const int w = mask.width;
    const int n = detail::thread_count(threads, area(h, w));
    detail::parallel_rows(h, n, [&](int y0, int y1) {
        for (int y = y0; y < y1; ++y) {
            const std::uint8_t* up = y > 0 ? mask.row(y - 1) : nullptr;
            const std::uint8_t* mid = mask.row(y);
            const std::uint8_t* down = y + 1 < h ? mask.row(y + 1) : nullptr;
            std::uint8_t* o = out.row(y);
            for (int x = 0; x < w; ++x) {
                const bool inside = mid[x] != 0;
                const bool interior = inside && up && down && x > 0 && x + 1 < w && up[x] && down[x] &&
                                      mid[x - 1] && mid[x + 1];
                o[x] = inside && !interior ? 1 : 0;
            }
        }
    });
}

void paint(ConstByteMapView where, ImageView image, std::array<std::uint8_t, 4> color, int threads) {
    paint_impl<3>(where, image, color, threads);
}

void paint(ConstByteMapView where, Image4View image, std::array<std::uint8_t, 4> color, int threads) {
    paint_impl<4>(where, image, color, threads);
}

}  // namespace camcore
