#include "protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <unistd.h>

#include <sys/stat.h>

namespace engine {

const std::vector<std::string>& allowed_flags() {
    static const std::vector<std::string> flags = {
        "-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze",  // the CSV's columns
        "-simalign", "-hogalign", "-tracked",                    // optional outputs
        "-wild",                                                 // in-the-wild capture
    };
    return flags;
}

static bool is_absolute(const std::string& path) { return !path.empty() && path[0] == '/'; }

std::optional<Request> parse_request(const std::string& line, std::string& id, std::string& error) {
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        error = "a request is one JSON object per line";
        return std::nullopt;
    }
    if (doc.contains("id") && doc["id"].is_string()) id = doc["id"].get<std::string>();
    if (id.empty()) {
        error = "the request has no string \"id\"";
        return std::nullopt;
    }
    Request request;
    request.id = id;
    const std::string mode = doc.value("mode", std::string());
    if (mode == "image") request.mode = Mode::Image;
    else if (mode == "video") request.mode = Mode::Video;
    else if (mode == "multi") request.mode = Mode::MultiFace;
    else {
        error = "\"mode\" must be \"image\", \"video\" or \"multi\"";
        return std::nullopt;
    }
    if (!doc.contains("input") || !doc["input"].is_string() || !doc.contains("out_dir") ||
        !doc["out_dir"].is_string()) {
        error = "\"input\" and \"out_dir\" must be strings";
        return std::nullopt;
    }
    request.input = doc["input"].get<std::string>();
    request.out_dir = doc["out_dir"].get<std::string>();
    if (!is_absolute(request.input) || !is_absolute(request.out_dir)) {
        error = "\"input\" and \"out_dir\" must be absolute paths";
        return std::nullopt;
    }
    // The recorder would exit(1) on a folder it cannot use: refuse it here instead.
    struct stat info {};
    if (stat(request.out_dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode) ||
        access(request.out_dir.c_str(), W_OK | X_OK) != 0) {
        error = "\"out_dir\" is not a folder this process may write: " + request.out_dir;
        return std::nullopt;
    }
    if (doc.contains("flags")) {
        if (!doc["flags"].is_array()) {
            error = "\"flags\" must be a list of strings";
            return std::nullopt;
        }
        for (const auto& flag : doc["flags"]) {
            const auto& allowed = allowed_flags();
            if (!flag.is_string() ||
                std::find(allowed.begin(), allowed.end(), flag.get<std::string>()) == allowed.end()) {
                error = "unknown flag " + flag.dump() + "; the engine takes -2Dfp -3Dfp -pdmparams -pose -aus "
                        "-gaze -simalign -hogalign -tracked -wild";
                return std::nullopt;
            }
            request.flags.push_back(flag.get<std::string>());
        }
    }
    return request;
}

void send(int fd, const nlohmann::json& message) {
    const std::string line = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    size_t written = 0;
    while (written < line.size()) {
        ssize_t n = write(fd, line.data() + written, line.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            _exit(3);  // nobody reads the replies any more
        }
        written += static_cast<size_t>(n);
    }
}

nlohmann::json to_json(const Reply& reply) {
    nlohmann::json out = {{"id", reply.id},         {"status", reply.status}, {"outputs", reply.outputs},
                          {"faces", reply.faces},   {"frames", reply.frames}, {"ms", reply.ms},
                          {"message", reply.message}};
    return out;
}

}  // namespace engine
