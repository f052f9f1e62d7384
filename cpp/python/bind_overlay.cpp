#include <cmath>
#include <cstdint>
#include <utility>

#include "bindings.hpp"
#include "camcore/overlay.hpp"
#include "camcore/resize.hpp"

namespace camcore::python {

namespace {

py::array_t<std::uint8_t> overlay_py(const py::object& image, const py::object& cam, double alpha,
                                     const std::string& colormap, bool rgb, bool normalize,
                                     const py::object& out, std::optional<int> threads) {
    constexpr const char* fn = "overlay";
    const Image img = image_arg(fn, "image", image);
    const auto map = float_map(fn, "cam", cam);
    if (!std::isfinite(alpha) || alpha < 0.0 || alpha > 1.0)
        fail(fn, "alpha must be in [0, 1]; got " + std::string(py::str(py::float_(alpha))));
    OverlayOptions options;
    options.alpha = alpha;
    options.colormap = &colormap_arg(fn, colormap);
    options.order = order_arg(rgb);
    options.normalize = normalize;
    options.threads = threads_arg(fn, threads);

    const auto h = static_cast<py::ssize_t>(img.view.height);
    const auto w = static_cast<py::ssize_t>(img.view.width);
    py::array_t<std::uint8_t> result;
    if (out.is_none()) {
        result = py::array_t<std::uint8_t>({h, w, py::ssize_t{3}});
    } else {
        const std::string expected = "out must be a writable uint8 array of shape (" + std::to_string(h) + ", " +
                                     std::to_string(w) + ", 3) with packed pixels; got ";
        if (!py::isinstance<py::array>(out)) fail(fn, expected + describe(out));
        const auto o = py::reinterpret_borrow<py::array>(out);
        const bool ok = o.dtype().kind() == 'u' && o.dtype().itemsize() == 1 && o.ndim() == 3 &&
                        o.shape(0) == h && o.shape(1) == w && o.shape(2) == 3 && o.writeable() &&
                        o.strides(2) == 1 && o.strides(1) == 3 && o.strides(0) >= 3 * w;
        if (!ok) fail(fn, expected + describe(out) + (o.writeable() ? "" : " (read-only)"));
        result = py::reinterpret_borrow<py::array_t<std::uint8_t>>(out);
    }
    const ImageView dst{result.mutable_data(), img.view.height, img.view.width, result.strides(0)};
    {
        py::gil_scoped_release release;
        camcore::overlay(img.view, map_view(map), dst, options);
    }
    return result;
}

py::array_t<float> resize_cam_py(const py::object& cam, std::pair<long long, long long> size,
                                 std::optional<int> threads) {
    constexpr const char* fn = "resize_cam";
    const auto map = float_map(fn, "cam", cam);
    const auto [h, w] = size;
    constexpr long long limit = 1LL << 30;
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
          py::arg("out") = py::none(), py::arg("threads") = py::none(),
          "Blend a colour-mapped, resized CAM onto a uint8 (H, W, 3) image in one pass.");
    m.def("resize_cam", &resize_cam_py, py::arg("cam"), py::arg("size"), py::kw_only(),
          py::arg("threads") = py::none(),
          "Resize a 2-D float map to size=(height, width) with cv2 INTER_LINEAR sampling; float32 result.");
}

}  // namespace camcore::python
