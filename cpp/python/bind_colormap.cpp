#include <cstdint>
#include <cstring>

#include "bindings.hpp"

namespace camcore::python {

namespace {

py::array_t<std::uint8_t> colorize_py(const py::object& cam, const std::string& colormap, bool rgb,
                                      std::optional<int> threads) {
    constexpr const char* fn = "colorize";
    const Colormap& cmap = colormap_arg(fn, colormap);
    const int n = threads_arg(fn, threads);
    py::array a = as_array(fn, "cam", cam);
    if (a.ndim() != 2) fail(fn, "cam must be a 2-D (H, W) map; got " + describe(a));
    if (a.size() == 0) fail(fn, "cam must not be empty; got " + describe(a));
    const bool u8 = a.dtype().kind() == 'u' && a.dtype().itemsize() == 1;
    if (!u8 && a.dtype().kind() != 'f')
        fail(fn, "cam must be uint8 (already quantized) or floating-point in [0, 1]; got " + describe(a));
    const auto h = a.shape(0), w = a.shape(1);
    py::array_t<std::uint8_t> out({h, w, py::ssize_t{3}});
    const ImageView dst = ImageView::contiguous(out.mutable_data(), static_cast<int>(h), static_cast<int>(w));
    if (u8) {
        const auto src = py::array_t<std::uint8_t, py::array::c_style>::ensure(a);
        py::gil_scoped_release release;
        colorize(map_view(src), dst, cmap, order_arg(rgb), n);
    } else {
        const auto src = float_map(fn, "cam", a);
        py::gil_scoped_release release;
        colorize(map_view(src), dst, cmap, order_arg(rgb), n);
    }
    return out;
}

py::array_t<std::uint8_t> colormap_table_py(const std::string& colormap, bool rgb) {
    const auto table = ordered_table(colormap_arg("colormap_table", colormap), order_arg(rgb));
    py::array_t<std::uint8_t> out({py::ssize_t{256}, py::ssize_t{3}});
    std::memcpy(out.mutable_data(), table.data(), sizeof(table));
    return out;
}

}  // namespace

void bind_colormap(py::module_& m) {
    py::tuple names(colormap_count());
    for (std::size_t i = 0; i < colormap_count(); ++i) names[i] = py::str(std::string(colormap_at(i).name));
    m.attr("COLORMAPS") = names;

    m.def("colorize", &colorize_py, py::arg("cam"), py::arg("colormap") = "jet", py::kw_only(),
          py::arg("rgb") = true, py::arg("threads") = py::none(),
          "Colour a 2-D map with an OpenCV colormap; returns a new (H, W, 3) uint8 array.");
    m.def("colormap_table", &colormap_table_py, py::arg("colormap"), py::kw_only(), py::arg("rgb") = true,
          "The 256 x 3 uint8 colour table of a colormap, in RGB (or BGR) order.");
}

}  // namespace camcore::python
