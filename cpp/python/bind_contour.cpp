#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bindings.hpp"
#include "camcore/contour.hpp"

namespace camcore::python {

namespace {

using Size = std::optional<std::pair<long long, long long>>;

/// The mask size: `size`, or the cam's own size.
std::pair<int, int> size_arg(const char* fn, const Size& size, const py::array& cam) {
    if (!size) return {static_cast<int>(cam.shape(0)), static_cast<int>(cam.shape(1))};
    const auto [h, w] = *size;
    constexpr long long limit = INT_MAX / 8;
    if (h <= 0 || w <= 0 || h > limit || w > limit)
        fail(fn, "size must be (height, width) with positive entries; got (" + std::to_string(h) + ", " +
                     std::to_string(w) + ")");
    return {static_cast<int>(h), static_cast<int>(w)};
}

float level_arg(const char* fn, double level) {
    if (!std::isfinite(level)) fail(fn, "level must be a finite number; got " + std::string(py::str(py::float_(level))));
    return static_cast<float>(level);
}

MaskOptions mask_options(const char* fn, bool normalize, const std::optional<std::pair<double, double>>& range,
                         std::optional<int> threads) {
    MaskOptions o;
    o.normalize = normalize;
    o.value_range = range_arg(fn, range, normalize);
    o.threads = threads_arg(fn, threads);
    return o;
}

py::array bool_array(int h, int w) { return py::array(py::dtype("bool"), std::vector<py::ssize_t>{h, w}); }

ByteMapView byte_view(py::array& a) {
    return ByteMapView::contiguous(static_cast<std::uint8_t*>(a.mutable_data()), static_cast<int>(a.shape(0)),
                                   static_cast<int>(a.shape(1)));
}

py::array threshold_mask_py(const py::object& cam, double level, const Size& size, bool normalize,
                            const std::optional<std::pair<double, double>>& range, std::optional<int> threads) {
    constexpr const char* fn = "threshold_mask";
    const auto map = float_map(fn, "cam", cam);
    const auto [h, w] = size_arg(fn, size, map);
    const float lv = level_arg(fn, level);
    const MaskOptions options = mask_options(fn, normalize, range, threads);
    py::array mask = bool_array(h, w);
    const ByteMapView m = byte_view(mask);
    py::gil_scoped_release release;
    threshold_mask(map_view(map), lv, m, options);
    return mask;
}

py::array contour_mask_py(const py::object& cam, double level, const Size& size, bool normalize,
                          const std::optional<std::pair<double, double>>& range, std::optional<int> threads) {
    constexpr const char* fn = "contour_mask";
    const auto map = float_map(fn, "cam", cam);
    const auto [h, w] = size_arg(fn, size, map);
    const float lv = level_arg(fn, level);
    const MaskOptions options = mask_options(fn, normalize, range, threads);
    py::array result = bool_array(h, w);
    const ByteMapView r = byte_view(result);
    py::gil_scoped_release release;
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(h) * static_cast<std::size_t>(w));
    const ByteMapView m = ByteMapView::contiguous(mask.data(), h, w);
    threshold_mask(map_view(map), lv, m, options);
    outline(m, r, options.threads);
    return result;
}

py::array draw_contour_py(const py::object& image, const py::object& cam, double level,
                          const std::vector<int>& color, bool normalize,
                          const std::optional<std::pair<double, double>>& range, const py::object& out,
                          std::optional<int> threads) {
    constexpr const char* fn = "draw_contour";
    const Frames img = frames_arg(fn, "image", image);
    if (img.batch) fail(fn, "image must be a single (H, W, 3|4) frame; got " + describe(image));
    const auto map = float_map(fn, "cam", cam, false, img.empty());
    const float lv = level_arg(fn, level);
    const MaskOptions options = mask_options(fn, normalize, range, threads);
    if (color.size() != 3 && color.size() != static_cast<std::size_t>(img.channels))
        fail(fn, "color must have 3" + std::string(img.channels == 4 ? " or 4" : "") + " entries; got " +
                     std::to_string(color.size()));
    std::array<std::uint8_t, 4> c{0, 0, 0, 255};
    for (std::size_t i = 0; i < color.size(); ++i) {
        if (color[i] < 0 || color[i] > 255) fail(fn, "color entries must be in [0, 255]");
        c[i] = static_cast<std::uint8_t>(color[i]);
    }
    const Frames dst = out_arg(fn, out, img);
    if (img.empty()) return dst.array;
    if (!out.is_none() && overlaps_differently(img.array, dst.array))
        fail(fn, "out overlaps image without being the same view");
    const int h = img.height, w = img.width;
    const auto row_bytes = static_cast<std::size_t>(w) * static_cast<std::size_t>(img.channels);
    py::gil_scoped_release release;
    if (img.frame(0) != dst.frame(0) || img.row_stride != dst.row_stride)
        for (int y = 0; y < h; ++y) std::memcpy(dst.frame(0) + y * dst.row_stride, img.frame(0) + y * img.row_stride, row_bytes);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(h) * static_cast<std::size_t>(w));
    std::vector<std::uint8_t> edge(mask.size());
    threshold_mask(map_view(map), lv, ByteMapView::contiguous(mask.data(), h, w), options);
    outline(ConstByteMapView::contiguous(mask.data(), h, w), ByteMapView::contiguous(edge.data(), h, w), options.threads);
    const ConstByteMapView where = ConstByteMapView::contiguous(edge.data(), h, w);
    if (img.channels == 3)
        paint(where, ImageView{dst.frame(0), h, w, dst.row_stride}, c, options.threads);
    else
        paint(where, Image4View{dst.frame(0), h, w, dst.row_stride}, c, options.threads);
    return dst.array;
}

}  // namespace

void bind_contour(py::module_& m) {
    m.def("threshold_mask", &threshold_mask_py, py::arg("cam"), py::arg("level"), py::arg("size") = py::none(),
          py::kw_only(), py::arg("normalize") = false, py::arg("value_range") = py::none(),
          py::arg("threads") = py::none(), "Boolean mask of the (resized) cam >= level.");
    m.def("contour_mask", &contour_mask_py, py::arg("cam"), py::arg("level"), py::arg("size") = py::none(),
          py::kw_only(), py::arg("normalize") = false, py::arg("value_range") = py::none(),
          py::arg("threads") = py::none(), "Boolean outline of the region where the (resized) cam >= level.");
    m.def("draw_contour", &draw_contour_py, py::arg("image"), py::arg("cam"), py::arg("level"),
          py::arg("color") = std::vector<int>{255, 255, 255}, py::kw_only(), py::arg("normalize") = false,
          py::arg("value_range") = py::none(), py::arg("out") = py::none(), py::arg("threads") = py::none(),
          "Paint the outline of the region where the cam (resized to the frame) >= level onto a frame.");
}

}  // namespace camcore::python
