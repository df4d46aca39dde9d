// openface-engine: OpenFace's models loaded once, then one analysis per request line.
//
//   openface-engine [--models DIR]
//
// DIR holds OpenFace's model/, AU_predictors/ and classifiers/ (default: the engine's own
// folder, where the executables keep them). The first line on stdout says the engine is
// ready; then every request on stdin gets one reply line (protocol.hpp). OpenFace's own
// messages go to stderr, so nothing they print can break a reply. A bad request, an
// unknown flag or an unreadable file is a reply; the engine ends only at the end of its
// input, or when it crashes.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <malloc.h>
#include <unistd.h>

#include <opencv2/core/version.hpp>

#include "models.hpp"
#include "modes.hpp"
#include "protocol.hpp"

namespace {

constexpr const char* kVersion = "1";

double milliseconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::string own_folder(const char* argv0) {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    std::string self = n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string(argv0);
    const size_t slash = self.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : self.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
    std::string models_dir;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--models" && i + 1 < argc) {
            models_dir = argv[++i];
        } else {
            std::cerr << "usage: openface-engine [--models DIR]" << std::endl;
            return 2;
        }
    }
    if (models_dir.empty()) models_dir = own_folder(argv[0]);

    // Replies keep the original stdout; everything printed to stdout from here on goes to stderr.
    const int replies = dup(STDOUT_FILENO);
    if (replies < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        std::perror("openface-engine: cannot set up the reply descriptor");
        return 1;
    }

    const auto loading = std::chrono::steady_clock::now();
    std::unique_ptr<engine::ResidentModels> models;
    try {
        models = std::make_unique<engine::ResidentModels>(models_dir);
    } catch (const std::exception& error) {
        engine::send(replies, {{"ready", false}, {"message", error.what()}});
        return 1;
    }
    engine::send(replies, {{"ready", true},
                           {"engine", kVersion},
                           {"opencv", CV_VERSION},
                           {"models_dir", models_dir},
                           {"models", models->describe()},
                           {"load_ms", milliseconds_since(loading)}});

    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const auto started = std::chrono::steady_clock::now();
        std::string id, error;
        engine::Reply reply;
        const auto request = engine::parse_request(line, id, error);
        if (!request) {
            reply.id = id;
            reply.status = "error";
            reply.message = error;
        } else {
            const auto progress = [&](int percent) {
                engine::send(replies, {{"id", request->id}, {"progress", percent}});
            };
            try {
                switch (request->mode) {
                    case engine::Mode::Image: reply = engine::analyse_image(*models, *request); break;
                    case engine::Mode::Video: reply = engine::analyse_video(*models, *request, progress); break;
                    case engine::Mode::MultiFace:
                        reply = engine::analyse_multi_face(*models, *request, progress);
                        break;
                }
            } catch (const std::exception& failure) {
                reply = engine::Reply();
                reply.id = request->id;
                reply.status = "error";
                reply.message = failure.what();
            }
        }
        std::cout.flush();
        malloc_trim(0);  // what the request's models and frames took goes back to the system
        reply.ms = milliseconds_since(started);
        engine::send(replies, engine::to_json(reply));
    }
    return 0;
}
