#include <climits>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "camcore/overlay.hpp"
#include "camcore/resize.hpp"

namespace camcore::python {

namespace {

template <int C>
void run_overlay(const Frames& img, const py::array_t<float, py::array::c_style>& cams, bool cam_batch,
                 const Frames& dst, const OverlayOptions& options) {
    std::vector<View<const std::uint8_t, C>> images;
    std::vector<View<std::uint8_t, C>> outs;
    std::vector<ConstMapView> maps;
    for (int i = 0; i < img.n; ++i) {
        images.push_back({img.frame(i), img.height, img.width, img.row_stride});
        outs.push_back({dst.frame(i), dst.height, dst.width, dst.row_stride});
        maps.push_back(map_view(cams, cam_batch ? i : 0));
    }
    py::gil_scoped_release release;
    overlay_batch(images.size(), images.data(), maps.data(), outs.data(), options);
}

py::array overlay_py(const py::object& image, const py::object& cam, double alpha, const std::string& colormap,
                     bool rgb, bool normalize, const py::object& out, std::optional<int> threads,
                     std::optional<std::pair<double, double>> value_range, bool alpha_from_cam) {
    constexpr const char* fn = "overlay";
    Frames img = frames_arg(fn, "image", image);
    const auto map = float_map(fn, "cam", cam, /*allow_batch=*/true, /*allow_empty=*/img.empty());
    const bool cam_batch = map.ndim() == 3;
    if (cam_batch && !img.batch)
        fail(fn, "cam is a batch of " + std::to_string(map.shape(0)) + " maps but image is a single frame; got " +
                     describe(image));
    if (cam_batch && map.shape(0) != img.n)
        fail(fn, "cam batch (" + std::to_string(map.shape(0)) + " maps) does not match the image batch (" +
                     std::to_string(img.n) + " frames)");
    if (!img.empty() && (map.shape(map.ndim() - 1) == 0 || map.shape(map.ndim() - 2) == 0))
        fail(fn, "cam must not be empty; got " + describe(map));
    if (!std::isfinite(alpha) || alpha < 0.0 || alpha > 1.0)
        fail(fn, "alpha must be in [0, 1]; got " + std::string(py::str(py::float_(alpha))));
    OverlayOptions options;
    options.alpha = alpha;
    options.colormap = &colormap_arg(fn, colormap);
    options.order = order_arg(rgb);
    options.normalize = normalize;
    options.value_range = range_arg(fn, value_range, normalize);
    options.alpha_from_cam = alpha_from_cam;
    options.threads = threads_arg(fn, threads);

    const Frames dst = out_arg(fn, out, img);
    if (img.empty()) return dst.array;
    if (overlaps_differently(img.array, dst.array))  // e.g. out = image shifted by a few pixels
        img = frames_arg(fn, "image", img.array.attr("copy")());
    if (img.channels == 3)
        run_overlay<3>(img, map, cam_batch, dst, options);
    else
        run_overlay<4>(img, map, cam_batch, dst, options);
    return dst.array;
}

py::array_t<float> resize_cam_py(const py::object& cam, std::pair<long long, long long> size,
                                 std::optional<int> threads) {
    constexpr const char* fn = "resize_cam";
    const auto map = float_map(fn, "cam", cam);
    const auto [h, w] = size;
    constexpr long long limit = INT_MAX / 8;
    if (h <= 0 || w <= 0 || h > limit || w > limit)
        fail(fn, "size must be (height, width) with positive entries; got (" + std::to_string(h) + ", " +
                     std::to_string(w) + ")");
    const int n = threads_arg(fn, threads);
    py::array_t<float> out({static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    const MapView dst = MapView::contiguous(out.mutable_data(), static_cast<int>(h), static_cast<int>(w));
    {
        py::gil_scoped_release release;
        resize_bilinear(map_view(map), dst, n);
    }
    return out;
}

}  // namespace

void bind_overlay(py::module_& m) {
    m.def("overlay", &overlay_py, py::arg("image"), py::arg("cam"), py::arg("alpha") = 0.5,
          py::arg("colormap") = "jet", py::arg("rgb") = true, py::arg("normalize") = false,
          py::arg("out") = py::none(), py::arg("threads") = py::none(), py::kw_only(),
          py::arg("value_range") = py::none(), py::arg("alpha_from_cam") = false,
          "Blend a colour-mapped, resized CAM onto uint8 (H, W, 3|4) frames, or a batch, in one pass.");
    m.def("resize_cam", &resize_cam_py, py::arg("cam"), py::arg("size"), py::kw_only(),
          py::arg("threads") = py::none(),
          "Resize a 2-D float map to size=(height, width) with cv2 INTER_LINEAR sampling; float32 result.");
}

}  // namespace camcore::python
