// The fused heat-map overlay: resize + quantize + colour + blend in one pass over the frame.
#pragma once

#include <vector>

#include "camcore/colormap.hpp"
#include "camcore/view.hpp"

namespace camcore {

struct OverlayOptions {
    double alpha = 0.5;                      ///< weight of the heat-map colour, in [0, 1]
    const Colormap* colormap = nullptr;      ///< nullptr = "jet"
    ChannelOrder order = ChannelOrder::RGB;  ///< channel order of the frame (and of `out`)
    bool normalize = false;                  ///< min-max scale the cam to [0, 1] first
    int threads = 0;                         ///< 0 = std::thread::hardware_concurrency()
};

/// out = round(alpha * colour(quantize(resize(cam))) + (1 - alpha) * image), per channel.
///
/// Equivalent to the OpenCV chain
///     cv2.resize(cam, (W, H), INTER_LINEAR) -> np.uint8(255 * clip(., 0, 1))
///     -> cv2.applyColorMap -> [BGR->RGB] -> cv2.addWeighted(colour, alpha, image, 1 - alpha, 0)
/// including addWeighted's float32 fma and round-half-to-even.
/// Non-finite cam values are replaced before resizing: NaN -> 0, +Inf -> 1, -Inf -> 0
/// (after normalization, which only looks at finite values).
/// `out` must have the image's size; it may alias `image`.
/// Throws std::invalid_argument on empty views, mismatched sizes or alpha outside [0, 1].
void overlay(ConstImageView image, ConstMapView cam, ImageView out,
             const OverlayOptions& options = {});

/// The cam as overlay() sees it before resizing: a packed copy with non-finite values
/// replaced and, if `normalize`, finite values min-max scaled to [0, 1] (a constant map
/// becomes all zeros).
std::vector<float> prepare_cam(ConstMapView cam, bool normalize);

}  // namespace camcore
