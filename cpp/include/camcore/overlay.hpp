// The fused heat-map overlay: resize + normalize + quantize + colour + blend in one pass over the frame.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "camcore/colormap.hpp"
#include "camcore/view.hpp"

namespace camcore {

/// A fixed value range mapped to [0, 1]: v -> (v - lo) / (hi - lo). Requires finite lo < hi.
struct ValueRange {
    float lo = 0.0f;
    float hi = 1.0f;
};

struct OverlayOptions {
    double alpha = 0.5;                      ///< weight of the heat-map colour, in [0, 1]
    const Colormap* colormap = nullptr;      ///< nullptr = "jet"
    ChannelOrder order = ChannelOrder::RGB;  ///< channel order of the frame (and of `out`)
    bool normalize = false;                  ///< min-max scale each cam to [0, 1] first
    std::optional<ValueRange> value_range;   ///< or scale by a fixed range (stable over video)
    bool alpha_from_cam = false;             ///< per-pixel weight alpha * level / 255: cold = transparent
    int threads = 0;                         ///< 0 = std::thread::hardware_concurrency()
};

/// out = round(w * colour(quantize(resize(cam))) + (1 - w) * image), per colour channel, with
/// w = alpha, or w = alpha * level / 255 when `alpha_from_cam` (level = the quantized value).
///
/// Follows the OpenCV chain
///     cv2.resize(cam, (W, H), INTER_LINEAR) -> np.uint8(255 * clip(., 0, 1))
///     -> cv2.applyColorMap -> [BGR->RGB] -> cv2.addWeighted(colour, alpha, image, 1 - alpha, 0)
/// The colour level is computed exactly as that chain does (see BilinearSampler); the blend runs
/// in 8.8 fixed point with round-half-to-even, so a pixel differs from addWeighted by at most 1,
/// only on rare near-ties, and never when alpha is a multiple of 1/256 (0.25, 0.5, ...).
/// Non-finite cam values are replaced before resizing: NaN -> 0, +Inf -> 1, -Inf -> 0
/// (after normalization, which only looks at finite values).
/// A 4-channel frame keeps its 4th channel. `out` must have the image's size; it may be the
/// image itself (same data and stride) but must not otherwise overlap it.
/// Throws std::invalid_argument on empty cams, mismatched sizes, alpha outside [0, 1] or a bad range.
void overlay(ConstImageView image, ConstMapView cam, ImageView out, const OverlayOptions& options = {});
void overlay(ConstImage4View image, ConstMapView cam, Image4View out, const OverlayOptions& options = {});

/// `count` overlays in one call: rows of all frames are shared out over the threads, so small
/// frames keep every core busy too. The frames may differ in size; a cam may be shared.
void overlay_batch(std::size_t count, const ConstImageView* images, const ConstMapView* cams,
                   const ImageView* outs, const OverlayOptions& options = {});
void overlay_batch(std::size_t count, const ConstImage4View* images, const ConstMapView* cams,
                   const Image4View* outs, const OverlayOptions& options = {});

/// The cam as overlay() sees it before resizing: a packed copy with non-finite values replaced
/// and, if `normalize`, finite values min-max scaled to [0, 1] (a constant map becomes all
/// zeros), or, with a `range`, scaled by that range.
std::vector<float> prepare_cam(ConstMapView cam, bool normalize, std::optional<ValueRange> range = std::nullopt);

}  // namespace camcore
