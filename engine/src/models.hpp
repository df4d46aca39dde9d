// Everything OpenFace loads before it reads a frame, loaded once for the engine's life.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <FaceAnalyser.h>
#include <LandmarkCoreIncludes.h>

namespace engine {

class ResidentModels {
public:
    // Loads the landmark models of every capture type, the face detectors and the AU models
    // from `models_dir` (the folder holding model/, AU_predictors/ and classifiers/).
    explicit ResidentModels(const std::string& models_dir);

    // The first command-line argument OpenFace reads: it finds its models next to it.
    std::string program(const std::string& executable) const { return models_dir_ + "/" + executable; }

    // A landmark model of its own for one video: a copy of the pristine one loaded from
    // `location`. A model that has tracked keeps state (Reset leaves the eye models as the
    // last video left them), so no video starts from another's model. The copy shares the
    // patch experts' weights.
    LandmarkDetector::CLNF landmark_model(const std::string& location) const;

    // The model images are fitted with, one per landmark profile, kept from image to image
    // as FaceLandmarkImg keeps it: a fit from a detection does not depend on the last one.
    // Its response cache is keyed by window size, while its values depend on sigma, so
    // parameters that differ (posed and in-the-wild) never share one.
    LandmarkDetector::CLNF& image_model(const LandmarkDetector::FaceModelParameters& parameters);

    // The same, with the face detectors the multi-face executable loads into its model.
    LandmarkDetector::CLNF multi_face_model(const std::string& location);

    FaceAnalysis::FaceAnalyser& static_analyser() { return *static_analyser_; }
    FaceAnalysis::FaceAnalyser& video_analyser() { return *video_analyser_; }

    cv::CascadeClassifier& haar_detector() { return haar_; }
    dlib::frontal_face_detector& hog_detector() { return hog_; }
    LandmarkDetector::FaceDetectorMTCNN& mtcnn_detector() { return mtcnn_; }

    bool has_eye_model() const;
    nlohmann::json describe() const;

private:
    const LandmarkDetector::CLNF& pristine(const std::string& location) const;

    std::string models_dir_;
    std::map<std::string, std::unique_ptr<LandmarkDetector::CLNF>> landmarks_;        // by model location
    std::map<std::string, std::unique_ptr<LandmarkDetector::CLNF>> multi_landmarks_;  // with detectors
    std::map<std::string, std::unique_ptr<LandmarkDetector::CLNF>> image_landmarks_;  // by landmark profile
    std::unique_ptr<FaceAnalysis::FaceAnalyser> static_analyser_;
    std::unique_ptr<FaceAnalysis::FaceAnalyser> video_analyser_;
    cv::CascadeClassifier haar_;
    dlib::frontal_face_detector hog_;
    LandmarkDetector::FaceDetectorMTCNN mtcnn_;
    std::string haar_location_, mtcnn_location_;
    bool mtcnn_loaded_ = false;
};

// The landmark parameters a request's command line gives (capture type...): built afresh
// for every request, since they change while they track.
LandmarkDetector::FaceModelParameters landmark_parameters(std::vector<std::string>& arguments);

}  // namespace engine
