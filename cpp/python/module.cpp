// camcore._core: thin bindings over the C++ postprocessing library (cpp/include/camcore).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "bindings.hpp"
#include "camcore/simd.hpp"

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
    if (!obj.is_none() && !py::isinstance<py::str>(obj) && !py::isinstance<py::bytes>(obj)) {
        try {
            return py::array::ensure(obj);
        } catch (const py::error_already_set&) {
        }
    }
    fail(fn, std::string(arg) + " must be a numpy array; got " + describe(obj));
}

namespace {

constexpr py::ssize_t kMaxSide = INT_MAX / 8;  // every index product stays inside int / ptrdiff_t

void check_sides(const char* fn, const char* arg, const py::array& a) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) > kMaxSide) fail(fn, std::string(arg) + " is too large; got " + describe(a));
}

bool is_u8(const py::array& a) { return a.dtype().kind() == 'u' && a.dtype().itemsize() == 1; }

}  // namespace

py::array_t<float, py::array::c_style> float_map(const char* fn, const char* arg, const py::handle& obj,
                                                 bool allow_batch, bool allow_empty) {
    py::array a = as_array(fn, arg, obj);
    if (a.ndim() != 2 && !(allow_batch && a.ndim() == 3))
        fail(fn, std::string(arg) + (allow_batch ? " must be a 2-D (H, W) map or a batch (N, H, W) of maps; got "
                                                 : " must be a 2-D (H, W) map; got ") +
                     describe(a));
    if (a.dtype().kind() != 'f')
        fail(fn, std::string(arg) + " must be a floating-point array; got " + describe(a) +
                     " (convert with .astype(np.float32))");
    if (a.size() == 0 && !allow_empty) fail(fn, std::string(arg) + " must not be empty; got " + describe(a));
    check_sides(fn, arg, a);
    return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

std::vector<py::ssize_t> Frames::shape() const {
    std::vector<py::ssize_t> s{height, width, channels};
    if (batch) s.insert(s.begin(), n);
    return s;
}

namespace {

Frames frames_of(py::array a) {
    Frames f;
    f.batch = a.ndim() == 4;
    const py::ssize_t o = f.batch ? 1 : 0;
    f.n = f.batch ? static_cast<int>(a.shape(0)) : 1;
    f.height = static_cast<int>(a.shape(o));
    f.width = static_cast<int>(a.shape(o + 1));
    f.channels = static_cast<int>(a.shape(o + 2));
    f.frame_stride = f.batch ? a.strides(0) : 0;
    f.row_stride = a.strides(o);
    f.array = std::move(a);
    return f;
}

bool pixels_packed(const py::array& a) {
    const py::ssize_t c = a.shape(a.ndim() - 1);
    return a.strides(a.ndim() - 1) == 1 && (a.shape(a.ndim() - 2) <= 1 || a.strides(a.ndim() - 2) == c);
}

std::string frame_shape_error(const char* arg) {
    return std::string(arg) + " must be a uint8 array of shape (H, W, 3), (H, W, 4) or a batch (N, H, W, 3|4); got ";
}

}  // namespace

Frames frames_arg(const char* fn, const char* arg, const py::handle& obj) {
    py::array a = as_array(fn, arg, obj);
    if (!is_u8(a) || (a.ndim() != 3 && a.ndim() != 4) || (a.shape(a.ndim() - 1) != 3 && a.shape(a.ndim() - 1) != 4))
        fail(fn, frame_shape_error(arg) + describe(a));
    check_sides(fn, arg, a);
    if (a.size() != 0 && !pixels_packed(a)) a = py::array_t<std::uint8_t, py::array::c_style>::ensure(a);  // copy
    return frames_of(std::move(a));
}

Frames out_arg(const char* fn, const py::object& out, const Frames& like) {
    if (out.is_none()) return frames_of(py::array_t<std::uint8_t>(like.shape()));
    std::string shape;
    for (auto s : like.shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
    const std::string expected = "out must be a writable uint8 array of shape (" + shape +
                                 ") with packed pixels and non-overlapping rows; got ";
    if (!py::isinstance<py::array>(out)) fail(fn, expected + describe(out));
    const auto o = py::reinterpret_borrow<py::array>(out);
    bool ok = is_u8(o) && static_cast<std::size_t>(o.ndim()) == like.shape().size() && o.writeable();
    for (py::ssize_t i = 0; ok && i < o.ndim(); ++i) ok = o.shape(i) == like.shape()[static_cast<std::size_t>(i)];
    if (ok && o.size() != 0) {
        const Frames f = frames_of(o);
        const py::ssize_t row_bytes = static_cast<py::ssize_t>(f.width) * f.channels;
        ok = pixels_packed(o) && (f.height <= 1 || std::abs(f.row_stride) >= row_bytes) &&
             (f.n <= 1 || std::abs(f.frame_stride) >= (f.height - 1) * std::abs(f.row_stride) + row_bytes);
    }
    if (!ok) fail(fn, expected + describe(out) + (o.writeable() ? "" : " (read-only)"));
    return frames_of(o);
}

bool overlaps_differently(const py::array& a, const py::array& b) {
    if (a.size() == 0 || b.size() == 0) return false;
    auto extent = [](const py::array& x) {
        const auto* p = static_cast<const std::uint8_t*>(x.data());
        const std::uint8_t *lo = p, *hi = p;
        for (py::ssize_t i = 0; i < x.ndim(); ++i) {
            const py::ssize_t span = x.strides(i) * (x.shape(i) - 1);
            (span < 0 ? lo : hi) += span;
        }
        return std::pair{lo, hi + x.itemsize()};
    };
    const auto [alo, ahi] = extent(a);
    const auto [blo, bhi] = extent(b);
    if (ahi <= blo || bhi <= alo) return false;
    if (a.data() != b.data() || a.ndim() != b.ndim()) return true;
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.strides(i) != b.strides(i) || a.shape(i) != b.shape(i)) return true;
    return false;
}

std::optional<ValueRange> range_arg(const char* fn, const std::optional<std::pair<double, double>>& range,
                                    bool normalize) {
    if (!range) return std::nullopt;
    if (normalize) fail(fn, "normalize=True and value_range are exclusive; pass one of them");
    const auto [lo, hi] = *range;
    const auto flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
    if (!(std::isfinite(flo) && std::isfinite(fhi) && flo < fhi))
        fail(fn, "value_range must be (lo, hi) with finite lo < hi; got (" + std::string(py::str(py::float_(lo))) +
                     ", " + std::string(py::str(py::float_(hi))) + ")");
    return ValueRange{flo, fhi};
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
    namespace py = pybind11;
    m.doc() = "camcore's compiled postprocessing core: fused Grad-CAM heat-map overlay, "
              "OpenCV-identical colormaps, INTER_LINEAR resizing, masks and contours.";
    camcore::python::bind_colormap(m);
    camcore::python::bind_overlay(m);
    camcore::python::bind_contour(m);
    m.def("simd", [] { return std::string(camcore::simd_name(camcore::simd())); },
          "The instruction set of the row kernels in use: 'avx2', 'sse2' or 'scalar'.");
    m.def(
        "_set_simd",
        [](const std::string& name) {
            camcore::Simd level = camcore::Simd::AVX2;
            if (name == "scalar")
                level = camcore::Simd::Scalar;
            else if (name == "sse2")
                level = camcore::Simd::SSE2;
            else if (name != "avx2")
                camcore::python::fail("_set_simd", "expected 'scalar', 'sse2' or 'avx2'; got '" + name + "'");
            return std::string(camcore::simd_name(camcore::set_simd(level)));
        },
        py::arg("name"), "Testing aid: switch the kernels (capped at what the CPU has); returns the level in use.");
}
