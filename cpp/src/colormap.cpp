#include "camcore/colormap.hpp"

#include <cctype>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "parallel.hpp"

namespace camcore {
namespace {

#include "colormap_tables.inc"

struct Registry {
    Colormap maps[kColormapCount];
    Registry() {
        for (std::size_t i = 0; i < kColormapCount; ++i) maps[i] = {kColormapNames[i], &kColormapTables[i]};
    }
};

const Registry& registry() {
    static const Registry r;
    return r;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    }
    return true;
}

template <class T, class Quantize>
void colorize_impl(View<const T> cam, ImageView out, const Colormap& cmap, ChannelOrder order,
                   int threads, Quantize quantize_fn) {
    if (cam.empty() || out.empty()) throw std::invalid_argument("colorize: empty map or output");
    if (cam.height != out.height || cam.width != out.width)
        throw std::invalid_argument("colorize: output size differs from the map size");
    const auto table = ordered_table(cmap, order);
    const int n = detail::thread_count(threads, static_cast<std::size_t>(cam.height) * cam.width);
    detail::parallel_rows(cam.height, n, [&](int y0, int y1) {
        for (int y = y0; y < y1; ++y) {
            const T* src = cam.row(y);
            std::uint8_t* dst = out.row(y);
            for (int x = 0; x < cam.width; ++x) {
                const auto& c = table[quantize_fn(src[x])];
                dst[3 * x + 0] = c[0];
                dst[3 * x + 1] = c[1];
                dst[3 * x + 2] = c[2];
            }
        }
    });
}

}  // namespace

std::size_t colormap_count() noexcept { return kColormapCount; }

const Colormap& colormap_at(std::size_t i) noexcept { return registry().maps[i]; }

const Colormap* find_colormap(std::string_view name) noexcept {
    for (const auto& m : registry().maps)
        if (iequals(m.name, name)) return &m;
    return nullptr;
}

const Colormap& get_colormap(std::string_view name) {
    if (const Colormap* m = find_colormap(name)) return *m;
    throw std::invalid_argument("unknown colormap '" + std::string(name) +
                                "'; valid colormaps: " + colormap_names());
}

std::string colormap_names(std::string_view separator) {
    std::string s;
    for (std::size_t i = 0; i < kColormapCount; ++i) {
        if (i) s += separator;
        s += kColormapNames[i];
    }
    return s;
}

std::array<std::array<std::uint8_t, 3>, 256> ordered_table(const Colormap& cmap, ChannelOrder order) {
    std::array<std::array<std::uint8_t, 3>, 256> t{};
    for (std::size_t i = 0; i < 256; ++i) {
        const Rgb c = (*cmap.rgb)[i];
        t[i] = order == ChannelOrder::RGB ? std::array<std::uint8_t, 3>{c.r, c.g, c.b}
                                          : std::array<std::uint8_t, 3>{c.b, c.g, c.r};
    }
    return t;
}

void colorize(ConstMapView cam, ImageView out, const Colormap& cmap, ChannelOrder order, int threads) {
    colorize_impl(cam, out, cmap, order, threads, [](float v) { return quantize(v); });
}

void colorize(ConstByteMapView cam, ImageView out, const Colormap& cmap, ChannelOrder order, int threads) {
    colorize_impl(cam, out, cmap, order, threads, [](std::uint8_t v) { return v; });
}

}  // namespace camcore
