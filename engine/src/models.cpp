#include "models.hpp"

#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace engine {

LandmarkDetector::FaceModelParameters landmark_parameters(std::vector<std::string>& arguments) {
    return LandmarkDetector::FaceModelParameters(arguments);
}

ResidentModels::ResidentModels(const std::string& models_dir) : models_dir_(models_dir) {
    // Each capture type's parameters name the landmark model they fit with.
    for (const std::vector<std::string>& flags : {std::vector<std::string>{}, std::vector<std::string>{"-wild"}}) {
        std::vector<std::string> arguments{program("FaceLandmarkImg")};
        arguments.insert(arguments.end(), flags.begin(), flags.end());
        LandmarkDetector::FaceModelParameters parameters(arguments);
        haar_location_ = parameters.haar_face_detector_location;
        mtcnn_location_ = parameters.mtcnn_face_detector_location;
        const std::string& location = parameters.model_location;
        if (landmarks_.count(location)) continue;
        auto model = std::make_unique<LandmarkDetector::CLNF>(location);
        if (!model->loaded_successfully) throw std::runtime_error("could not load the landmark model " + location);
        landmarks_[location] = std::move(model);
    }
    haar_.load(haar_location_);
    hog_ = dlib::get_frontal_face_detector();
    mtcnn_.Read(mtcnn_location_);
    mtcnn_loaded_ = !mtcnn_.empty();

    // Images and multi-face videos use the static AU models; one-face videos the dynamic ones.
    std::vector<std::string> arguments{program("FaceLandmarkImg")};
    FaceAnalysis::FaceAnalyserParameters static_parameters(arguments);
    static_parameters.OptimizeForImages();
    static_analyser_ = std::make_unique<FaceAnalysis::FaceAnalyser>(static_parameters);
    arguments = {program("FeatureExtraction")};
    FaceAnalysis::FaceAnalyserParameters video_parameters(arguments);
    video_analyser_ = std::make_unique<FaceAnalysis::FaceAnalyser>(video_parameters);

    // An image model's first fit fills its response caches, which takes longer than a fit: do it
    // now for posed images, on a blank picture, so that no request pays for it. Fits from a
    // detection do not depend on the ones before, so this one changes no result. In-the-wild
    // models are made at their first request: their caches (larger windows) take some 250 MB.
    const cv::Mat blank(480, 640, CV_8UC3, cv::Scalar(128, 128, 128));
    cv::Mat grey;
    cv::cvtColor(blank, grey, cv::COLOR_BGR2GRAY);
    std::vector<std::string> warm_arguments{program("FaceLandmarkImg")};
    LandmarkDetector::FaceModelParameters posed(warm_arguments);
    LandmarkDetector::DetectLandmarksInImage(blank, cv::Rect_<double>(220, 140, 200, 200), image_model(posed), posed,
                                             grey);
}

const LandmarkDetector::CLNF& ResidentModels::pristine(const std::string& location) const {
    auto found = landmarks_.find(location);
    if (found == landmarks_.end()) throw std::runtime_error("no landmark model was loaded from " + location);
    return *found->second;
}

LandmarkDetector::CLNF ResidentModels::landmark_model(const std::string& location) const {
    return LandmarkDetector::CLNF(pristine(location));
}

LandmarkDetector::CLNF& ResidentModels::image_model(const LandmarkDetector::FaceModelParameters& parameters) {
    std::string profile = parameters.model_location + "|" + std::to_string(parameters.sigma);
    for (int size : parameters.window_sizes_init) profile += "|" + std::to_string(size);
    auto& model = image_landmarks_[profile];
    if (!model) model = std::make_unique<LandmarkDetector::CLNF>(pristine(parameters.model_location));
    return *model;
}

LandmarkDetector::CLNF ResidentModels::multi_face_model(const std::string& location) {
    auto& multi = multi_landmarks_[location];
    if (!multi) {  // the multi-face executable's model carries the face detectors it detects with
        multi = std::make_unique<LandmarkDetector::CLNF>(pristine(location));
        multi->face_detector_HAAR.load(haar_location_);
        multi->haar_face_detector_location = haar_location_;
        multi->face_detector_MTCNN.Read(mtcnn_location_);
        multi->mtcnn_face_detector_location = mtcnn_location_;
    }
    return LandmarkDetector::CLNF(*multi);
}

bool ResidentModels::has_eye_model() const {
    return !landmarks_.empty() && landmarks_.begin()->second->eye_model;
}

nlohmann::json ResidentModels::describe() const {
    nlohmann::json landmark_models = nlohmann::json::array();
    for (const auto& entry : landmarks_) landmark_models.push_back(entry.first);
    return {{"landmarks", landmark_models},
            {"eye_model", has_eye_model()},
            {"haar", haar_location_},
            {"mtcnn", mtcnn_location_},
            {"mtcnn_loaded", mtcnn_loaded_},
            {"au_classes", static_analyser_->GetAUClassNames().size()},
            {"au_regressors", static_analyser_->GetAURegNames().size()}};
}

}  // namespace engine
