// Run an exported camcore CAM model (`camcore export`, `camcore.export_cam_model`) with OpenVINO's
// C++ API and draw its `cam` output with camcore::post's overlay. No Python anywhere.
//
//   camcore_openvino_cam MODEL.onnx OUT_DIR FRAMES... [options]
//
// FRAMES are binary PPM (P6) or PGM (P5) files with maxval 255, or "-" for standard input. A file
// may hold several images back to back (a netpbm stream), so a video is read from a pipe:
//   ffmpeg -loglevel error -i clip.mp4 -f image2pipe -c:v ppm - | camcore_openvino_cam m.onnx out -
// (the camcore C++ library has no image codecs, and this example does not depend on OpenCV).
//
// Per frame: resize to the model's input size with camcore::resize_bilinear (each channel as a
// float plane, OpenCV's INTER_LINEAR grid; the frame is used as is when its size already
// matches), x = (v / 255 - mean) / std per channel as float32 (camcore.preprocess.Preprocess's
// formula v * (1 / (255 std)) + (-mean / std)), NCHW or NHWC as the model's input declares, run,
// then camcore::overlay(frame, cam) at the frame's own size. Writes OUT_DIR/<stem>_overlay.ppm
// (<stem>_<k>_overlay.ppm for the k-th frame of a stream), with --save-cam the raw map as
// <stem>_cam.pfm (little-endian float32 PFM, rows bottom to top as the format requires), and for
// a model exported with --overlay the graph's own blend as <stem>_graph_overlay.ppm.
//
// Inputs of the exported model: the image input (the first one not named below), an optional
// int64 `class` (N,) (-1 = the top-1 class; fed only when the compiled model exposes it), and
// with --overlay exports a uint8 `image` (N, H, W, 3), fed with the (resized) frame.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <istream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "camcore/colormap.hpp"
#include "camcore/overlay.hpp"
#include "camcore/resize.hpp"

namespace fs = std::filesystem;

namespace {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// An 8-bit RGB frame, packed.
struct Frame {
    int height = 0;
    int width = 0;
    std::vector<std::uint8_t> rgb;  // height * width * 3
};

struct Options {
    std::string model;
    fs::path out_dir;
    std::vector<std::string> frames;
    float mean[3] = {0.485f, 0.456f, 0.406f};
    float std_[3] = {0.229f, 0.224f, 0.225f};
    long long cls = -1;
    double alpha = 0.5;
    std::string colormap = "jet";
    std::string device = "CPU";
    int threads = 0;
    bool bgr = false;
    bool save_cam = false;
};

const char* const kUsage =
    "usage: camcore_openvino_cam MODEL.onnx OUT_DIR FRAME.ppm|- [FRAME ...]\n"
    "         [--mean R,G,B] [--std R,G,B]   per-channel statistics after scaling to [0, 1] (ImageNet's)\n"
    "         [--class K]                    explain class K (default -1: the top-1 class)\n"
    "         [--alpha A] [--colormap NAME]  overlay weight (0.5) and colours (jet)\n"
    "         [--bgr]                        the model expects BGR channel order\n"
    "         [--threads N] [--device CPU]   OpenVINO inference threads (0 = its default) and device\n"
    "         [--save-cam]                   also write each map as OUT_DIR/<stem>_cam.pfm\n";

void parse_triple(const std::string& flag, const std::string& text, float (&out)[3]) {
    std::stringstream ss(text);
    std::string item;
    int n = 0;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const float v = std::strtof(item.c_str(), &end);
        if (n == 3 || item.empty() || *end != '\0' || !std::isfinite(v))
            throw UsageError(flag + " needs three comma-separated numbers, got '" + text + "'");
        out[n++] = v;
    }
    if (n != 3) throw UsageError(flag + " needs three comma-separated numbers, got '" + text + "'");
}

template <class T>
T parse_number(const std::string& flag, const std::string& text) {
    std::istringstream in(text);
    T v{};
    if (!(in >> v) || !in.eof()) throw UsageError(flag + " needs a number, got '" + text + "'");
    return v;
}

Options parse_args(int argc, char** argv) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError(a + " needs a value");
            return argv[++i];
        };
        if (a == "--mean") {
            parse_triple(a, value(), o.mean);
        } else if (a == "--std") {
            parse_triple(a, value(), o.std_);
        } else if (a == "--class") {
            o.cls = parse_number<long long>(a, value());
        } else if (a == "--alpha") {
            o.alpha = parse_number<double>(a, value());
        } else if (a == "--colormap") {
            o.colormap = value();
        } else if (a == "--device") {
            o.device = value();
        } else if (a == "--threads") {
            o.threads = parse_number<int>(a, value());
        } else if (a == "--bgr") {
            o.bgr = true;
        } else if (a == "--save-cam") {
            o.save_cam = true;
        } else if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            std::exit(0);
        } else if (a.size() > 1 && a[0] == '-' && a[1] == '-') {
            throw UsageError("unknown option " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.size() < 3) throw UsageError("needs MODEL, OUT_DIR and at least one frame");
    o.model = positional[0];
    o.out_dir = positional[1];
    o.frames.assign(positional.begin() + 2, positional.end());
    for (float s : o.std_)
        if (s == 0.0f) throw UsageError("--std values must be non-zero");
    if (!(o.alpha >= 0.0 && o.alpha <= 1.0)) throw UsageError("--alpha must be in [0, 1]");
    if (o.cls < -1) throw UsageError("--class must be >= 0, or -1 for the top-1 class");
    if (o.threads < 0) throw UsageError("--threads must be >= 0 (0 = OpenVINO's default)");
    if (camcore::find_colormap(o.colormap) == nullptr)
        throw UsageError("unknown --colormap '" + o.colormap + "'; choose one of " + camcore::colormap_names());
    return o;
}

// ---- netpbm (P5 / P6, maxval 255) ----------------------------------------------------------

/// Skips whitespace and '#' comments; returns false at end of stream.
bool skip_space(std::istream& in) {
    for (;;) {
        const int c = in.peek();
        if (c == EOF) return false;
        if (c == '#') {
            std::string line;
            std::getline(in, line);
        } else if (std::isspace(c)) {
            in.get();
        } else {
            return true;
        }
    }
}

int read_header_int(std::istream& in, const std::string& source) {
    if (!skip_space(in)) throw std::runtime_error(source + ": truncated netpbm header");
    long v = 0;
    int digits = 0;
    while (std::isdigit(in.peek()) && digits < 9) {
        v = v * 10 + (in.get() - '0');
        ++digits;
    }
    if (digits == 0 || v <= 0) throw std::runtime_error(source + ": bad netpbm header (expected a positive number)");
    return static_cast<int>(v);
}

/// Reads the next frame of a netpbm stream; false at a clean end of stream.
bool read_frame(std::istream& in, const std::string& source, Frame& frame) {
    if (!skip_space(in)) return false;
    char magic[2] = {};
    in.read(magic, 2);
    if (!in || magic[0] != 'P' || (magic[1] != '5' && magic[1] != '6'))
        throw std::runtime_error(source + ": not a binary PPM (P6) or PGM (P5) image; convert it, e.g. with "
                                          "ffmpeg -i IN -c:v ppm OUT.ppm");
    const int channels = magic[1] == '6' ? 3 : 1;
    frame.width = read_header_int(in, source);
    frame.height = read_header_int(in, source);
    const int maxval = read_header_int(in, source);
    if (maxval != 255) throw std::runtime_error(source + ": only 8-bit netpbm (maxval 255) is supported");
    in.get();  // the single whitespace before the raster
    const std::size_t pixels = static_cast<std::size_t>(frame.width) * frame.height;
    std::vector<std::uint8_t> raw(pixels * channels);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    if (static_cast<std::size_t>(in.gcount()) != raw.size()) throw std::runtime_error(source + ": truncated image data");
    if (channels == 3) {
        frame.rgb = std::move(raw);
    } else {
        frame.rgb.resize(pixels * 3);
        for (std::size_t i = 0; i < pixels; ++i) frame.rgb[3 * i] = frame.rgb[3 * i + 1] = frame.rgb[3 * i + 2] = raw[i];
    }
    return true;
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half a file.
void write_atomic(const fs::path& path, const std::string& header, const void* data, std::size_t size) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
        if (!out) throw std::runtime_error("cannot write " + tmp.string());
    }
    fs::rename(tmp, path);
}

void write_ppm(const fs::path& path, const Frame& f) {
    write_atomic(path, "P6\n" + std::to_string(f.width) + " " + std::to_string(f.height) + "\n255\n", f.rgb.data(),
                 f.rgb.size());
}

void write_pfm(const fs::path& path, const float* cam, int height, int width) {
    std::vector<float> flipped(static_cast<std::size_t>(height) * width);
    for (int y = 0; y < height; ++y)
        std::copy_n(cam + static_cast<std::size_t>(y) * width, width,
                    flipped.data() + static_cast<std::size_t>(height - 1 - y) * width);
    write_atomic(path, "Pf\n" + std::to_string(width) + " " + std::to_string(height) + "\n-1.0\n", flipped.data(),
                 flipped.size() * sizeof(float));  // -1.0: little-endian (x86-64, aarch64)
}

// ---- the model ---------------------------------------------------------------------------------

bool has_name(const ov::Output<const ov::Node>& port, const std::string& name) {
    const auto& names = port.get_names();
    return names.count(name) > 0;
}

/// How the exported model is fed: its image input's layout and size, and the optional inputs.
struct ModelIo {
    std::string image_input;
    bool nhwc = false;
    int height = 0;  // 0 = dynamic: the frame's own size
    int width = 0;
    bool has_class = false;
    bool has_image = false;   // --overlay exports: uint8 (N, H, W, 3)
    bool has_overlay = false;
    std::string logits;       // first other rank-2 output, for printing the top-1 class
};

ModelIo inspect(const ov::CompiledModel& compiled) {
    ModelIo io;
    for (const auto& port : compiled.inputs()) {
        if (has_name(port, "class")) {
            io.has_class = true;
        } else if (has_name(port, "image")) {
            io.has_image = true;
        } else if (io.image_input.empty()) {
            io.image_input = port.get_any_name();
            const ov::PartialShape shape = port.get_partial_shape();
            if (shape.rank().is_dynamic() || shape.rank().get_length() != 4)
                throw std::runtime_error("input '" + io.image_input + "' has shape " + shape.to_string() +
                                         "; this example feeds images, (N, 3, H, W) or (N, H, W, 3)");
            auto fixed = [&](int i) { return shape[i].is_static() ? static_cast<int>(shape[i].get_length()) : 0; };
            io.nhwc = fixed(3) == 3 && fixed(1) != 3;
            io.height = io.nhwc ? fixed(1) : fixed(2);
            io.width = io.nhwc ? fixed(2) : fixed(3);
        }
    }
    if (io.image_input.empty()) throw std::runtime_error("the model has no image input");
    bool has_cam = false;
    for (const auto& port : compiled.outputs()) {
        if (has_name(port, "cam")) {
            has_cam = true;
        } else if (has_name(port, "overlay")) {
            io.has_overlay = true;
        } else if (io.logits.empty() && port.get_partial_shape().rank().is_static() &&
                   port.get_partial_shape().rank().get_length() == 2) {
            io.logits = port.get_any_name();
        }
    }
    if (!has_cam)
        throw std::runtime_error("the model has no output named 'cam'; export one with `camcore export MODEL -o OUT.onnx`");
    return io;
}

/// The frame at (height, width) as float planes in R, G, B order (resized when the size differs).
std::vector<float> resized_planes(const Frame& f, int height, int width) {
    const std::size_t src_px = static_cast<std::size_t>(f.width) * f.height;
    const std::size_t dst_px = static_cast<std::size_t>(width) * height;
    std::vector<float> planes(3 * dst_px);
    std::vector<float> src(src_px);
    for (int c = 0; c < 3; ++c) {
        for (std::size_t i = 0; i < src_px; ++i) src[i] = f.rgb[3 * i + c];
        float* dst = planes.data() + c * dst_px;
        if (height == f.height && width == f.width) {
            std::copy(src.begin(), src.end(), dst);
        } else {
            camcore::resize_bilinear(camcore::ConstMapView::contiguous(src.data(), f.height, f.width),
                                     camcore::MapView::contiguous(dst, height, width), 0);
        }
    }
    return planes;
}

std::string stem_of(const std::string& source) { return source == "-" ? "stdin" : fs::path(source).stem().string(); }

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    try {
        opt = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
        return 2;
    }
    try {
        const camcore::Colormap& cmap = camcore::get_colormap(opt.colormap);
        fs::create_directories(opt.out_dir);

        ov::Core core;
        std::shared_ptr<ov::Model> model = core.read_model(opt.model);
        {
            // The image goes in as f32 and the map comes out as f32 whatever the model's own
            // precision (fp16 exports): OpenVINO inserts the conversions.
            ov::preprocess::PrePostProcessor ppp(model);
            for (const auto& port : model->inputs())
                if (port.get_element_type().is_real()) ppp.input(port.get_any_name()).tensor().set_element_type(ov::element::f32);
            for (const auto& port : model->outputs())
                if (port.get_names().count("cam")) ppp.output(port.get_any_name()).tensor().set_element_type(ov::element::f32);
            model = ppp.build();
        }
        ov::AnyMap config{ov::hint::inference_precision(ov::element::f32)};
        if (opt.threads > 0) config.emplace(ov::inference_num_threads(opt.threads));
        ov::CompiledModel compiled = core.compile_model(model, opt.device, config);
        const ModelIo io = inspect(compiled);
        if (opt.cls >= 0 && !io.has_class)
            throw std::runtime_error("--class needs a model with a 'class' input, and this one has none (an input "
                                     "with a default value becomes a constant in OpenVINO); it explains the top-1 class");
        ov::InferRequest request = compiled.create_infer_request();

        const float mul[3] = {1.0f / (255.0f * opt.std_[0]), 1.0f / (255.0f * opt.std_[1]), 1.0f / (255.0f * opt.std_[2])};
        const float add[3] = {-opt.mean[0] / opt.std_[0], -opt.mean[1] / opt.std_[1], -opt.mean[2] / opt.std_[2]};
        camcore::OverlayOptions overlay_options;
        overlay_options.alpha = opt.alpha;
        overlay_options.colormap = &cmap;
        std::int64_t cls = opt.cls;
        std::size_t total = 0;
        double infer_ms = 0.0, draw_ms = 0.0;
        using clock = std::chrono::steady_clock;

        for (const std::string& source : opt.frames) {
            std::ifstream file;
            std::istream* in = &std::cin;
            if (source != "-") {
                file.open(source, std::ios::binary);
                if (!file) throw std::runtime_error("cannot open " + source);
                in = &file;
            }
            Frame frame;
            for (int k = 0; read_frame(*in, source, frame); ++k) {
                const bool more = skip_space(*in);
                const std::string stem = stem_of(source) + (k > 0 || more ? "_" + std::to_string(k) : "");
                const int h = io.height > 0 ? io.height : frame.height;
                const int w = io.width > 0 ? io.width : frame.width;
                const std::size_t px = static_cast<std::size_t>(h) * w;
                std::vector<float> planes = resized_planes(frame, h, w);

                std::vector<float> x(3 * px);
                for (int c = 0; c < 3; ++c) {
                    const int src_c = opt.bgr ? 2 - c : c;  // channel c of the model's input
                    const float* p = planes.data() + src_c * px;
                    for (std::size_t i = 0; i < px; ++i) {
                        const float v = p[i] * mul[src_c] + add[src_c];
                        if (io.nhwc)
                            x[3 * i + c] = v;
                        else
                            x[c * px + i] = v;
                    }
                }
                const ov::Shape shape = io.nhwc ? ov::Shape{1, static_cast<size_t>(h), static_cast<size_t>(w), 3}
                                                : ov::Shape{1, 3, static_cast<size_t>(h), static_cast<size_t>(w)};
                request.set_tensor(io.image_input, ov::Tensor(ov::element::f32, shape, x.data()));
                if (io.has_class) request.set_tensor("class", ov::Tensor(ov::element::i64, ov::Shape{1}, &cls));
                std::vector<std::uint8_t> small;  // the frame at the model's size, for `image`
                if (io.has_image) {
                    small.resize(3 * px);
                    for (int c = 0; c < 3; ++c)
                        for (std::size_t i = 0; i < px; ++i)
                            small[3 * i + c] = static_cast<std::uint8_t>(
                                std::lround(std::clamp(planes[c * px + i], 0.0f, 255.0f)));
                    request.set_tensor("image", ov::Tensor(ov::element::u8, ov::Shape{1, static_cast<size_t>(h),
                                                                                      static_cast<size_t>(w), 3},
                                                           small.data()));
                }
                const auto t0 = clock::now();
                request.infer();
                const auto t1 = clock::now();

                const ov::Tensor cam = request.get_tensor("cam");
                const ov::Shape cs = cam.get_shape();
                if (cs.size() != 3 || cs[0] != 1)
                    throw std::runtime_error("output 'cam' has shape " + cs.to_string() + ", expected (1, H, W)");
                const int ch = static_cast<int>(cs[1]), cw = static_cast<int>(cs[2]);
                const float* cam_data = cam.data<const float>();

                Frame out{frame.height, frame.width, std::vector<std::uint8_t>(frame.rgb.size())};
                camcore::overlay(camcore::ConstImageView::contiguous(frame.rgb.data(), frame.height, frame.width),
                                 camcore::ConstMapView::contiguous(cam_data, ch, cw),
                                 camcore::ImageView::contiguous(out.rgb.data(), out.height, out.width),
                                 overlay_options);
                const auto t2 = clock::now();
                const fs::path out_path = opt.out_dir / (stem + "_overlay.ppm");
                for (const std::string& other : opt.frames)  // never overwrite an input
                    if (other != "-" && fs::exists(out_path) && fs::equivalent(other, out_path))
                        throw std::runtime_error("the output " + out_path.string() + " would overwrite the input " +
                                                 other + "; choose another OUT_DIR");
                write_ppm(out_path, out);
                if (opt.save_cam) write_pfm(opt.out_dir / (stem + "_cam.pfm"), cam_data, ch, cw);
                if (io.has_overlay) {  // the graph's own blend (exported with --overlay), at the model's size
                    const ov::Tensor blended = request.get_tensor("overlay");
                    const ov::Shape bs = blended.get_shape();
                    if (blended.get_element_type() != ov::element::u8 || bs.size() != 4 || bs[0] != 1 || bs[3] != 3)
                        throw std::runtime_error("output 'overlay' has shape " + bs.to_string() + ", expected (1, H, W, 3) uint8");
                    const std::uint8_t* b = blended.data<const std::uint8_t>();
                    Frame g{static_cast<int>(bs[1]), static_cast<int>(bs[2]), std::vector<std::uint8_t>(b, b + blended.get_size())};
                    write_ppm(opt.out_dir / (stem + "_graph_overlay.ppm"), g);
                }

                std::string top;
                if (!io.logits.empty()) {
                    const ov::Tensor logits = request.get_tensor(io.logits);
                    if (logits.get_element_type() == ov::element::f32 && logits.get_size() > 0) {
                        const float* l = logits.data<const float>();
                        top = ", top-1 class " + std::to_string(std::max_element(l, l + logits.get_size()) - l);
                    }
                }
                const double ms_infer = std::chrono::duration<double, std::milli>(t1 - t0).count();
                const double ms_draw = std::chrono::duration<double, std::milli>(t2 - t1).count();
                infer_ms += ms_infer;
                draw_ms += ms_draw;
                ++total;
                std::printf("%s: %dx%d frame, cam %dx%d%s, infer %.2f ms, overlay %.2f ms -> %s\n", source.c_str(),
                            frame.width, frame.height, cw, ch, top.c_str(), ms_infer, ms_draw, out_path.string().c_str());
            }
        }
        if (total == 0) throw std::runtime_error("no frames read");
        std::printf("%zu frame(s), mean infer %.2f ms, mean overlay %.2f ms (OpenVINO %s on %s)\n", total,
                    infer_ms / total, draw_ms / total, ov::get_openvino_version().buildNumber, opt.device.c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
