// Thresholded masks and outlines of a CAM: "where is the map above this level", for reports.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "camcore/overlay.hpp"
#include "camcore/view.hpp"

namespace camcore {

struct MaskOptions {
    bool normalize = false;                 ///< min-max scale the cam first (as in overlay)
    std::optional<ValueRange> value_range;  ///< or scale by a fixed range
    int threads = 0;                        ///< 0 = all cores
};

/// mask(y, x) = 1 where the cam, prepared like overlay() does and resized to the mask's size
/// with INTER_LINEAR sampling, is >= `level`; 0 elsewhere.
void threshold_mask(ConstMapView cam, float level, ByteMapView mask, const MaskOptions& options = {});

/// The outline of a mask: out(y, x) = 1 where mask(y, x) != 0 and one of its 4 neighbours is 0
/// or outside the frame; 0 elsewhere. These are the pixels cv2.findContours traces (outer
/// borders and holes). `out` must have the mask's size and must not overlap it.
void outline(ConstByteMapView mask, ByteMapView out, int threads = 0);

/// Paints `color` (in the frame's channel order; a 4th entry only for 4-channel frames) on the
/// pixels of `image` where `where` is non-zero. Sizes must match.
void paint(ConstByteMapView where, ImageView image, std::array<std::uint8_t, 4> color, int threads = 0);
void paint(ConstByteMapView where, Image4View image, std::array<std::uint8_t, 4> color, int threads = 0);

}  // namespace camcore
