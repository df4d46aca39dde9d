// The engine's protocol: one JSON request per line on stdin, one JSON reply per line on the
// reply descriptor (the engine's original stdout; OpenFace's own printing goes to stderr).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace engine {

enum class Mode { Image, Video, MultiFace };

// One analysis: what the command line of FaceLandmarkImg, FeatureExtraction or
// FaceLandmarkVidMulti would name for one input file.
struct Request {
    std::string id;
    Mode mode = Mode::Image;
    std::string input;   // absolute path of the media
    std::string out_dir; // absolute path of an existing, writable folder
    std::vector<std::string> flags;  // OpenFace's own, as the executables take them
};

// What became of a request. status: "ok", "unreadable" (OpenFace cannot open the
// input) or "error" (a bad request, or an exception while analysing).
struct Reply {
    std::string id;
    std::string status = "ok";
    std::vector<std::string> outputs;  // file and folder names written in out_dir
    int faces = 0;   // images: faces detected; videos: frames with a tracked face; multi: face ids seen
    int frames = 0;  // frames read (1 for an image)
    double ms = 0;
    std::string message;
};

// The flags a request may carry: the service's output selection and capture type.
const std::vector<std::string>& allowed_flags();

// Parses one line; on a bad request, returns nothing and sets `error` (and `id` when it was readable).
std::optional<Request> parse_request(const std::string& line, std::string& id, std::string& error);

// Writes one JSON line on the reply descriptor, whole, whatever else the process prints.
void send(int fd, const nlohmann::json& message);
nlohmann::json to_json(const Reply& reply);

}  // namespace engine
