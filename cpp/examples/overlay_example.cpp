// A C++-only use of camcore::post: overlay a synthetic 7x7 CAM on a gradient frame and write a
// binary PPM. Usage: camcore_overlay_example OUT.ppm [WIDTH HEIGHT]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "camcore/overlay.hpp"

int main(int argc, char** argv) {
    if (argc != 2 && argc != 4) {
        std::fprintf(stderr, "usage: %s OUT.ppm [WIDTH HEIGHT]\n", argv[0]);
        return 2;
    }
    const int width = argc == 4 ? std::atoi(argv[2]) : 320;
    const int height = argc == 4 ? std::atoi(argv[3]) : 240;
    try {
        std::vector<std::uint8_t> frame(static_cast<std::size_t>(width) * height * 3);
        for (int y = 0; y < height; ++y)
            for (int x = 0; x < width; ++x) {
                std::uint8_t* p = &frame[(static_cast<std::size_t>(y) * width + x) * 3];
                p[0] = static_cast<std::uint8_t>(255 * x / width);
                p[1] = static_cast<std::uint8_t>(255 * y / height);
                p[2] = 128;
            }
        std::vector<float> cam(7 * 7);
        for (int i = 0; i < 7; ++i)
            for (int j = 0; j < 7; ++j) cam[i * 7 + j] = static_cast<float>((i * j) % 7) / 6.0f;

        std::vector<std::uint8_t> out(frame.size());
        camcore::OverlayOptions options;
        options.alpha = 0.4;
        options.colormap = &camcore::get_colormap("turbo");
        camcore::overlay(camcore::ConstImageView::contiguous(frame.data(), height, width),
                         camcore::ConstMapView::contiguous(cam.data(), 7, 7),
                         camcore::ImageView::contiguous(out.data(), height, width), options);

        std::FILE* f = std::fopen(argv[1], "wb");
        if (!f) {
            std::perror(argv[1]);
            return 1;
        }
        std::fprintf(f, "P6\n%d %d\n255\n", width, height);
        std::fwrite(out.data(), 1, out.size(), f);
        std::fclose(f);
        unsigned long long sum = 0;
        for (std::uint8_t v : out) sum += v;
        std::printf("wrote %s (%dx%d), checksum %llu\n", argv[1], width, height, sum);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
