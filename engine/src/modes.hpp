// One request of each mode, done as the matching OpenFace executable does it for that one file.
#pragma once

#include <functional>

#include "models.hpp"
#include "protocol.hpp"

namespace engine {

// Called with a video's percent done, in steps of 10, as the executables print it.
using Progress = std::function<void(int percent)>;

Reply analyse_image(ResidentModels& models, const Request& request);
Reply analyse_video(ResidentModels& models, const Request& request, const Progress& progress);
Reply analyse_multi_face(ResidentModels& models, const Request& request, const Progress& progress);

}  // namespace engine
