// The one header that includes pybind11; shared argument checking for the bind_*.cpp files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "camcore/colormap.hpp"
#include "camcore/overlay.hpp"
#include "camcore/view.hpp"

namespace camcore::python {

namespace py = pybind11;

void bind_colormap(py::module_& m);
void bind_overlay(py::module_& m);
void bind_contour(py::module_& m);

/// "float64 array of shape (2, 3)" for error messages.
std::string describe(const py::handle& obj);

/// Raises ValueError("<fn>: <message>").
[[noreturn]] void fail(const char* fn, const std::string& message);

/// `obj` as a numpy array (no copy for ndarrays); ValueError naming `arg` otherwise.
py::array as_array(const char* fn, const char* arg, const py::handle& obj);

/// A floating map of `ndim` dimensions (2, or 3 for a batch) as C-contiguous float32: no copy
/// when it already is one. `allow_empty`: a zero-sized map is accepted.
py::array_t<float, py::array::c_style> float_map(const char* fn, const char* arg, const py::handle& obj,
                                                 bool allow_batch = false, bool allow_empty = false);

/// A map view over a C-contiguous 2-D array (float32 or uint8), or map i of a 3-D one.
template <class T>
View<const T> map_view(const py::array_t<T, py::array::c_style>& a, py::ssize_t i = 0) {
    const auto h = a.shape(a.ndim() - 2), w = a.shape(a.ndim() - 1);
    return View<const T>::contiguous(a.data() + i * h * w, static_cast<int>(h), static_cast<int>(w));
}

/// uint8 frames: (H, W, C) or a batch (N, H, W, C) with C = 3 or 4. Pixels must be packed
/// within a row (rows and frames may be strided, even negatively); other layouts are copied.
struct Frames {
    py::array array;  // keeps the buffer alive (a packed copy if the layout needed one)
    bool batch = false;
    int n = 1, height = 0, width = 0, channels = 0;
    py::ssize_t frame_stride = 0, row_stride = 0;  // bytes

    std::uint8_t* frame(int i) const {
        return static_cast<std::uint8_t*>(const_cast<void*>(array.data())) + i * frame_stride;
    }
    bool empty() const { return n == 0 || height == 0 || width == 0; }
    std::vector<py::ssize_t> shape() const;
};
Frames frames_arg(const char* fn, const char* arg, const py::handle& obj);

/// A writable output matching `like` (same shape): a new array, or `out` after checking that it is
/// uint8, writable, pixel-packed and free of self-overlap.
Frames out_arg(const char* fn, const py::object& out, const Frames& like);

/// True when two arrays share bytes but are not the very same view (in-place is fine; a shifted
/// overlap is not).
bool overlaps_differently(const py::array& a, const py::array& b);

/// An optional (lo, hi) pair.
std::optional<ValueRange> range_arg(const char* fn, const std::optional<std::pair<double, double>>& range,
                                    bool normalize);

const Colormap& colormap_arg(const char* fn, const std::string& name);
int threads_arg(const char* fn, std::optional<int> threads);
ChannelOrder order_arg(bool rgb);

}  // namespace camcore::python
