// C++-only tests of camcore::post (no Python): run by ctest, and once under ASan + UBSan
// (see the README's development section). Exit code 0 = all checks passed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "camcore/colormap.hpp"
#include "camcore/contour.hpp"
#include "camcore/overlay.hpp"
#include "camcore/resize.hpp"
#include "camcore/simd.hpp"

namespace {

int failures = 0;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                        \
        }                                                                      \
    } while (0)

template <class Fn>
bool throws(Fn&& fn) {
    try {
        fn();
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

std::mt19937 rng(1234);

std::vector<std::uint8_t> random_bytes(std::size_t n) {
    std::vector<std::uint8_t> v(n);
    for (auto& b : v) b = static_cast<std::uint8_t>(rng() & 0xff);
    return v;
}

std::vector<float> random_map(int h, int w, bool non_finite) {
    std::uniform_real_distribution<float> u(-0.3f, 1.3f);
    std::vector<float> v(static_cast<std::size_t>(h) * w);
    for (auto& x : v) x = u(rng);
    if (non_finite && v.size() >= 3) {
        v[0] = std::numeric_limits<float>::quiet_NaN();
        v[v.size() / 2] = std::numeric_limits<float>::infinity();
        v.back() = -std::numeric_limits<float>::infinity();
    }
    return v;
}

/// A plain reference: resize_bilinear + quantize + table + a double-precision blend.
template <int C>
std::vector<std::uint8_t> reference(const std::vector<std::uint8_t>& image, int h, int w, const std::vector<float>& cam,
                                    int ch, int cw, const camcore::OverlayOptions& o) {
    const std::vector<float> prepared =
        camcore::prepare_cam(camcore::ConstMapView::contiguous(cam.data(), ch, cw), o.normalize, o.value_range);
    std::vector<float> up(static_cast<std::size_t>(h) * w);
    camcore::resize_bilinear(camcore::ConstMapView::contiguous(prepared.data(), ch, cw),
                             camcore::MapView::contiguous(up.data(), h, w), 1);
    const auto table = camcore::ordered_table(o.colormap ? *o.colormap : camcore::get_colormap("jet"), o.order);
    std::vector<std::uint8_t> out(image);
    for (std::size_t i = 0; i < up.size(); ++i) {
        const std::uint8_t q = camcore::quantize(up[i]);
        const double a = o.alpha_from_cam ? o.alpha * q / 255.0 : static_cast<float>(o.alpha);
        const double b = o.alpha_from_cam ? 1.0 - a : static_cast<float>(1.0 - o.alpha);
        for (int c = 0; c < 3; ++c)
            out[i * C + c] = static_cast<std::uint8_t>(
                std::clamp(std::nearbyint(a * table[q][static_cast<std::size_t>(c)] + b * image[i * C + c]), 0.0, 255.0));
    }
    return out;
}

int max_diff(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
    int d = a.size() == b.size() ? 0 : 999;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::abs(int{a[i]} - int{b[i]}));
    return d;
}

template <int C>
void random_overlays(int cases) {
    using Const = camcore::View<const std::uint8_t, C>;
    using Mut = camcore::View<std::uint8_t, C>;
    for (int t = 0; t < cases; ++t) {
        const int h = 1 + static_cast<int>(rng() % 90), w = 1 + static_cast<int>(rng() % 130);
        const int ch = 1 + static_cast<int>(rng() % 12), cw = 1 + static_cast<int>(rng() % 12);
        const auto image = random_bytes(static_cast<std::size_t>(h) * w * C);
        const auto cam = random_map(ch, cw, t % 3 == 0);
        camcore::OverlayOptions o;
        o.alpha = (rng() % 5) / 4.0 * ((t % 2) ? 1.0 : 0.37);
        o.colormap = &camcore::colormap_at(rng() % camcore::colormap_count());
        o.order = t % 2 ? camcore::ChannelOrder::RGB : camcore::ChannelOrder::BGR;
        o.normalize = t % 4 == 1;
        if (t % 4 == 2) o.value_range = camcore::ValueRange{-0.5f, 1.5f};
        o.alpha_from_cam = t % 5 == 0;
        o.threads = 1 + t % 3;
        const auto want = reference<C>(image, h, w, cam, ch, cw, o);
        const camcore::ConstMapView map = camcore::ConstMapView::contiguous(cam.data(), ch, cw);

        // Packed, then a flipped view (negative row stride) of a padded buffer, then in place.
        std::vector<std::uint8_t> out(image.size());
        camcore::overlay(Const::contiguous(image.data(), h, w), map, Mut::contiguous(out.data(), h, w), o);
        CHECK(max_diff(out, want) <= 1);

        const std::ptrdiff_t stride = static_cast<std::ptrdiff_t>(w) * C + 7;
        std::vector<std::uint8_t> padded(static_cast<std::size_t>(stride) * h, 0);
        std::vector<std::uint8_t> flipped_out(padded.size(), 0);
        for (int y = 0; y < h; ++y)
            std::copy_n(&image[static_cast<std::size_t>(y) * w * C], static_cast<std::size_t>(w) * C,
                        &padded[static_cast<std::size_t>(stride) * (h - 1 - y)]);
        const std::size_t last = static_cast<std::size_t>(stride) * (h - 1);
        camcore::overlay(Const{padded.data() + last, h, w, -stride}, map, Mut{flipped_out.data() + last, h, w, -stride},
                         o);
        std::vector<std::uint8_t> unflipped(image.size());
        for (int y = 0; y < h; ++y)
            std::copy_n(&flipped_out[static_cast<std::size_t>(stride) * (h - 1 - y)], static_cast<std::size_t>(w) * C,
                        &unflipped[static_cast<std::size_t>(y) * w * C]);
        CHECK(unflipped == out);

        std::vector<std::uint8_t> frame(image);
        camcore::overlay(Const::contiguous(frame.data(), h, w), map, Mut::contiguous(frame.data(), h, w), o);
        CHECK(frame == out);
        for (std::size_t i = 3; C == 4 && i < frame.size(); i += 4) CHECK(frame[i] == image[i]);
    }
}

void batches() {
    const int n = 4, h = 37, w = 53;
    std::vector<std::vector<std::uint8_t>> images, outs;
    std::vector<std::vector<float>> cams;
    std::vector<camcore::ConstImageView> iv;
    std::vector<camcore::ImageView> ov;
    std::vector<camcore::ConstMapView> cv;
    for (int i = 0; i < n; ++i) {
        images.push_back(random_bytes(static_cast<std::size_t>(h) * w * 3));
        outs.emplace_back(images.back().size());
        cams.push_back(random_map(5 + i, 7, i == 2));
    }
    for (int i = 0; i < n; ++i) {
        iv.push_back(camcore::ConstImageView::contiguous(images[static_cast<std::size_t>(i)].data(), h, w));
        ov.push_back(camcore::ImageView::contiguous(outs[static_cast<std::size_t>(i)].data(), h, w));
        cv.push_back(camcore::ConstMapView::contiguous(cams[static_cast<std::size_t>(i)].data(), 5 + i, 7));
    }
    camcore::OverlayOptions o;
    o.normalize = true;
    o.threads = 3;
    camcore::overlay_batch(n, iv.data(), cv.data(), ov.data(), o);
    for (int i = 0; i < n; ++i) {
        std::vector<std::uint8_t> one(images[static_cast<std::size_t>(i)].size());
        camcore::overlay(iv[static_cast<std::size_t>(i)], cv[static_cast<std::size_t>(i)],
                         camcore::ImageView::contiguous(one.data(), h, w), o);
        CHECK(one == outs[static_cast<std::size_t>(i)]);
    }
}

// Frames big enough to be split over threads: the rows of a map shared between threads, the
// reused edge rows and the filled edge columns give the pixels of one thread, for any count.
void threads_agree() {
    const int h = 480, w = 640;
    const auto image = random_bytes(static_cast<std::size_t>(h) * w * 3);
    const int shapes[][2] = {{7, 7}, {14, 14}, {1, 5}, {5, 1}, {600, 3}, {3, 900}};
    for (const auto& shape : shapes) {
        const auto cam = random_map(shape[0], shape[1], false);
        const camcore::ConstMapView map = camcore::ConstMapView::contiguous(cam.data(), shape[0], shape[1]);
        camcore::OverlayOptions o;
        o.threads = 1;
        std::vector<std::uint8_t> want(image.size());
        camcore::overlay(camcore::ConstImageView::contiguous(image.data(), h, w), map,
                         camcore::ImageView::contiguous(want.data(), h, w), o);
        for (int threads : {2, 3, 8}) {
            for (int repeat = 0; repeat < 3; ++repeat) {
                o.threads = threads;
                std::vector<std::uint8_t> got(image.size());
                camcore::overlay(camcore::ConstImageView::contiguous(image.data(), h, w), map,
                                 camcore::ImageView::contiguous(got.data(), h, w), o);
                CHECK(got == want);
            }
        }
    }
}

void simd_levels_agree() {
    const int h = 41, w = 333;
    const auto image = random_bytes(static_cast<std::size_t>(h) * w * 3);
    const auto cam = random_map(9, 14, true);
    camcore::OverlayOptions o;
    o.alpha = 0.3;
    std::vector<std::vector<std::uint8_t>> results;
    const camcore::Simd before = camcore::simd();
    for (camcore::Simd level : {camcore::Simd::Scalar, camcore::Simd::SSE2, camcore::Simd::AVX2}) {
        if (camcore::set_simd(level) != level) continue;
        for (bool per_pixel : {false, true}) {
            o.alpha_from_cam = per_pixel;
            results.emplace_back(image.size());
            camcore::overlay(camcore::ConstImageView::contiguous(image.data(), h, w),
                             camcore::ConstMapView::contiguous(cam.data(), 9, 14),
                             camcore::ImageView::contiguous(results.back().data(), h, w), o);
        }
    }
    camcore::set_simd(before);
    for (std::size_t i = 2; i < results.size(); ++i) CHECK(results[i] == results[i % 2]);
}

void errors_and_empty() {
    std::vector<std::uint8_t> img(12 * 3), out(12 * 3);
    std::vector<float> cam(4, 0.5f);
    const auto image = camcore::ConstImageView::contiguous(img.data(), 3, 4);
    const auto map = camcore::ConstMapView::contiguous(cam.data(), 2, 2);
    const auto dst = camcore::ImageView::contiguous(out.data(), 3, 4);
    camcore::OverlayOptions o;
    o.alpha = 1.5;
    CHECK(throws([&] { camcore::overlay(image, map, dst, o); }));
    o.alpha = 0.5;
    o.normalize = true;
    o.value_range = camcore::ValueRange{0.0f, 1.0f};
    CHECK(throws([&] { camcore::overlay(image, map, dst, o); }));
    o.normalize = false;
    o.value_range = camcore::ValueRange{1.0f, 1.0f};
    CHECK(throws([&] { camcore::overlay(image, map, dst, o); }));
    CHECK(throws([&] { camcore::overlay(image, map, camcore::ImageView::contiguous(out.data(), 2, 4)); }));
    CHECK(throws([&] { camcore::overlay(image, camcore::ConstMapView{}, dst); }));
    CHECK(throws([] { camcore::get_colormap("nope"); }));
    camcore::overlay(camcore::ConstImageView::contiguous(img.data(), 0, 4), map,
                     camcore::ImageView::contiguous(out.data(), 0, 4));  // empty frame: nothing to do
    std::vector<float> constant(9, 3.0f);
    const auto zeros = camcore::prepare_cam(camcore::ConstMapView::contiguous(constant.data(), 3, 3), true);
    CHECK(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));
}

void masks_and_outlines() {
    const int h = 40, w = 50;
    const auto cam = random_map(6, 8, false);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(h) * w), edge(mask.size());
    std::vector<float> up(mask.size());
    camcore::threshold_mask(camcore::ConstMapView::contiguous(cam.data(), 6, 8), 0.5f,
                            camcore::ByteMapView::contiguous(mask.data(), h, w));
    camcore::resize_bilinear(camcore::ConstMapView::contiguous(cam.data(), 6, 8), camcore::MapView::contiguous(up.data(), h, w));
    for (std::size_t i = 0; i < up.size(); ++i) CHECK(mask[i] == (up[i] >= 0.5f ? 1 : 0));
    camcore::outline(camcore::ConstByteMapView::contiguous(mask.data(), h, w), camcore::ByteMapView::contiguous(edge.data(), h, w), 2);
    auto at = [&](int y, int x) { return y < 0 || x < 0 || y >= h || x >= w ? 0 : mask[static_cast<std::size_t>(y) * w + x]; };
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            const bool border = at(y, x) && !(at(y - 1, x) && at(y + 1, x) && at(y, x - 1) && at(y, x + 1));
            CHECK(edge[static_cast<std::size_t>(y) * w + x] == (border ? 1 : 0));
        }
}

}  // namespace

int main() {
    std::printf("camcore tests, kernels: %s\n", camcore::simd_name(camcore::simd()));
    random_overlays<3>(120);
    random_overlays<4>(60);
    batches();
    threads_agree();
    simd_levels_agree();
    errors_and_empty();
    masks_and_outlines();
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("all checks passed\n");
    return 0;
}
