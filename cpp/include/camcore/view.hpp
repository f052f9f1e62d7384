// Non-owning 2-D views over interleaved pixel buffers. No Python, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace camcore {

/// A height x width grid of `Channels` interleaved values of type T.
/// `row_stride` is the distance between rows, counted in elements of T (not bytes), so a
/// crop of a larger frame is a view too; it may be negative (a vertically flipped view).
/// Pixels inside a row are packed.
template <class T, int Channels = 1>
struct View {
    static constexpr int channels = Channels;

    T* data = nullptr;
    int height = 0;
    int width = 0;
    std::ptrdiff_t row_stride = 0;

    /// A packed (row_stride = width * Channels) view.
    static View contiguous(T* data, int height, int width) noexcept {
        return {data, height, width, static_cast<std::ptrdiff_t>(width) * Channels};
    }

    T* row(int y) const noexcept { return data + static_cast<std::ptrdiff_t>(y) * row_stride; }
    bool empty() const noexcept { return data == nullptr || height <= 0 || width <= 0; }

    /// Views of T convert implicitly to views of const T.
    template <class U = T, class = std::enable_if_t<!std::is_const_v<U>>>
    operator View<const U, Channels>() const noexcept {
        return {data, height, width, row_stride};
    }
};

using MapView = View<float>;                      ///< a single-channel float map (a CAM)
using ConstMapView = View<const float>;
using ByteMapView = View<std::uint8_t>;           ///< a single-channel uint8 map (a mask)
using ConstByteMapView = View<const std::uint8_t>;
using ImageView = View<std::uint8_t, 3>;          ///< an 8-bit, 3-channel frame (RGB or BGR)
using ConstImageView = View<const std::uint8_t, 3>;
using Image4View = View<std::uint8_t, 4>;         ///< an 8-bit, 4-channel frame (RGBA or BGRA)
using ConstImage4View = View<const std::uint8_t, 4>;

}  // namespace camcore
