// The one header that includes pybind11; shared argument checking for the bind_*.cpp files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "camcore/colormap.hpp"
#include "camcore/view.hpp"

namespace camcore::python {

namespace py = pybind11;

void bind_colormap(py::module_& m);
void bind_overlay(py::module_& m);

/// "float64 array of shape (2, 3)" for error messages.
std::string describe(const py::handle& obj);

/// Raises ValueError("<fn>: <message>").
[[noreturn]] void fail(const char* fn, const std::string& message);

/// `obj` as a numpy array (no copy for ndarrays); ValueError naming `arg` otherwise.
py::array as_array(const char* fn, const char* arg, const py::handle& obj);

/// A 2-D floating map as float32 (no copy when it already is C-contiguous float32).
py::array_t<float, py::array::c_style> float_map(const char* fn, const char* arg, const py::handle& obj);

/// A map view over a C-contiguous 2-D array (float32 or uint8).
template <class T>
View<const T> map_view(const py::array_t<T, py::array::c_style>& a) {
    return View<const T>::contiguous(a.data(), static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)));
}

/// A uint8 H x W x 3 image; packed rows are required only within a row (crops are views).
struct Image {
    py::array array;  // keeps the buffer alive (a contiguous copy if the layout needed one)
    ConstImageView view;
};
Image image_arg(const char* fn, const char* arg, const py::handle& obj);

const Colormap& colormap_arg(const char* fn, const std::string& name);
int threads_arg(const char* fn, std::optional<int> threads);
ChannelOrder order_arg(bool rgb);

}  // namespace camcore::python
