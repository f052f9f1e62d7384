// camcore._core: thin bindings over the C++ postprocessing library (cpp/include/camcore).
#include "bindings.hpp"

#include <cmath>
#include <cstdint>

namespace camcore::python {

std::string describe(const py::handle& obj) {
    if (!py::isinstance<py::array>(obj)) return std::string(py::str(py::type::of(obj).attr("__name__")));
    const auto a = py::reinterpret_borrow<py::array>(obj);
    std::string shape = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) shape += ", ";
        shape += std::to_string(a.shape(i));
    }
    shape += a.ndim() == 1 ? ",)" : ")";
    return std::string(py::str(a.dtype())) + " array of shape " + shape;
}

void fail(const char* fn, const std::string& message) { throw py::value_error(std::string(fn) + ": " + message); }

py::array as_array(const char* fn, const char* arg, const py::handle& obj) {
    if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
    try {
        return py::array::ensure(obj);
    } catch (const py::error_already_set&) {
    }
    fail(fn, std::string(arg) + " must be a numpy array; got " + describe(obj));
}

py::array_t<float, py::array::c_style> float_map(const char* fn, const char* arg, const py::handle& obj) {
    py::array a = as_array(fn, arg, obj);
    if (a.ndim() != 2) fail(fn, std::string(arg) + " must be a 2-D (H, W) map; got " + describe(a));
    if (a.dtype().kind() != 'f')
        fail(fn, std::string(arg) + " must be a floating-point array; got " + describe(a) +
                     " (convert with .astype(np.float32))");
    if (a.size() == 0) fail(fn, std::string(arg) + " must not be empty; got " + describe(a));
    return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

Image image_arg(const char* fn, const char* arg, const py::handle& obj) {
    py::array a = as_array(fn, arg, obj);
    const bool u8 = a.dtype().kind() == 'u' && a.dtype().itemsize() == 1;
    if (!u8 || a.ndim() != 3 || a.shape(2) != 3)
        fail(fn, std::string(arg) + " must be a uint8 array of shape (H, W, 3); got " + describe(a));
    if (a.shape(0) == 0 || a.shape(1) == 0) fail(fn, std::string(arg) + " must not be empty; got " + describe(a));
    const bool packed_rows = a.strides(2) == 1 && a.strides(1) == 3 && a.strides(0) >= 3 * a.shape(1);
    if (!packed_rows) a = py::array_t<std::uint8_t, py::array::c_style>::ensure(a);  // copy
    const ConstImageView view{static_cast<const std::uint8_t*>(a.data()), static_cast<int>(a.shape(0)),
                              static_cast<int>(a.shape(1)), a.strides(0)};
    return {std::move(a), view};
}

const Colormap& colormap_arg(const char* fn, const std::string& name) {
    if (const Colormap* m = find_colormap(name)) return *m;
    fail(fn, "unknown colormap '" + name + "'; valid colormaps: " + colormap_names());
}

int threads_arg(const char* fn, std::optional<int> threads) {
    if (threads && *threads < 0) fail(fn, "threads must be >= 0 or None; got " + std::to_string(*threads));
    return threads.value_or(0);
}

ChannelOrder order_arg(bool rgb) { return rgb ? ChannelOrder::RGB : ChannelOrder::BGR; }

}  // namespace camcore::python

PYBIND11_MODULE(_core, m, pybind11::mod_gil_not_used()) {
    m.doc() = "camcore's compiled postprocessing core: fused Grad-CAM heat-map overlay, "
              "OpenCV-identical colormaps and INTER_LINEAR resizing.";
    camcore::python::bind_colormap(m);
    camcore::python::bind_overlay(m);
}
