// Each mode calls OpenFace's libraries in the order its executable does, with the command line
// that executable would get for the one file, so that every file written is the same.
#include "modes.hpp"

#include <algorithm>
#include <dirent.h>

#include <GazeEstimation.h>
#include <ImageCapture.h>
#include <RecorderOpenFace.h>
#include <RecorderOpenFaceParameters.h>
#include <SequenceCapture.h>
#include <VisualizationUtils.h>
#include <Visualizer.h>

namespace engine {

namespace {

// The command line the executable would get for this one request.
std::vector<std::string> command_line(const ResidentModels& models, const std::string& executable,
                                      const Request& request) {
    std::vector<std::string> arguments{models.program(executable), "-f", request.input};
    arguments.insert(arguments.end(), request.flags.begin(), request.flags.end());
    arguments.push_back("-out_dir");
    arguments.push_back(request.out_dir);
    return arguments;
}

std::string stem_of(const std::string& path) {
    std::string name = path.substr(path.find_last_of('/') + 1);
    const size_t dot = name.find_last_of('.');
    return dot == std::string::npos ? name : name.substr(0, dot);
}

// What the recorder wrote for this input: every entry of out_dir named after its stem.
std::vector<std::string> outputs_of(const Request& request) {
    std::vector<std::string> found;
    const std::string stem = stem_of(request.input);
    if (DIR* dir = opendir(request.out_dir.c_str())) {
        while (dirent* entry = readdir(dir)) {
            const std::string name = entry->d_name;
            if (name.compare(0, stem.size(), stem) == 0 &&
                (name.size() == stem.size() || name[stem.size()] == '.' || name[stem.size()] == '_'))
                found.push_back(name);
        }
        closedir(dir);
    }
    std::sort(found.begin(), found.end());
    return found;
}

void report_progress(Utilities::SequenceCapture& reader, double& reported, const Progress& progress) {
    if (reader.GetProgress() >= reported / 10.0) {
        progress(static_cast<int>(reported * 10));
        reported += 1;
    }
}

// OpenFace 2.2 ships ConcurrentQueue.h; 2.0 does not. Their multi-face executables
// differ in how they treat overlapping faces, and the engine does as the one it is built with.
#if __has_include(<ConcurrentQueue.h>)
constexpr bool kOpenFace22 = true;
#else
constexpr bool kOpenFace22 = false;
#endif

// Overlap of two boxes: intersection over union. (OpenFace 2.0 counts the intersection
// twice in the union, so that its 0.5 threshold is an IoU of 1/3.)
double overlap(const cv::Rect_<float>& a, const cv::Rect_<float>& b) {
    const double intersection = (a & b).area();
    const double joined = a.area() + b.area() - (kOpenFace22 ? 1 : 2) * intersection;
    return intersection / joined;
}

// Detections that a tracking model already covers add nothing (the multi-face executable's rule).
void drop_tracked(const std::vector<LandmarkDetector::CLNF>& trackers, std::vector<cv::Rect_<float>>& detections) {
    for (const auto& tracker : trackers) {
        const cv::Rect_<float> tracked = tracker.GetBoundingBox();
        for (int i = static_cast<int>(detections.size()) - 1; i >= 0; --i) {
            if (overlap(tracked, detections[i]) > 0.5) detections.erase(detections.begin() + i);
        }
    }
}

// OpenFace 2.2: of two trackers that converged on one face, the first lets go.
void drop_duplicate_trackers(std::vector<LandmarkDetector::CLNF>& trackers, std::vector<bool>& active) {
    if (!kOpenFace22) return;
    for (size_t first = 0; first < trackers.size(); ++first) {
        if (!active[first]) continue;
        const cv::Rect_<float> box = trackers[first].GetBoundingBox();
        for (size_t second = first + 1; second < trackers.size(); ++second) {
            if (active[second] && overlap(box, trackers[second].GetBoundingBox()) > 0.5) {
                active[first] = false;
                trackers[first].Reset();
            }
        }
    }
}

}  // namespace

Reply analyse_image(ResidentModels& models, const Request& request) {
    Reply reply;
    reply.id = request.id;
    // ImageCapture exits the process on an image it cannot read: read it first.
    if (cv::imread(request.input, cv::IMREAD_COLOR).empty()) {
        reply.status = "unreadable";
        reply.message = "could not open the image";
        return reply;
    }
    std::vector<std::string> arguments = command_line(models, "FaceLandmarkImg", request);
    Utilities::ImageCapture reader;
    if (!reader.Open(arguments)) {
        reply.status = "unreadable";
        reply.message = "could not open the image";
        return reply;
    }
    LandmarkDetector::FaceModelParameters parameters = landmark_parameters(arguments);
    LandmarkDetector::CLNF& model = models.image_model(parameters);
    FaceAnalysis::FaceAnalyserParameters analyser_parameters(arguments);  // it reads, and takes, its flags
    FaceAnalysis::FaceAnalyser& analyser = models.static_analyser();
    if (parameters.curr_face_detector == LandmarkDetector::FaceModelParameters::MTCNN_DETECTOR &&
        models.mtcnn_detector().empty())
        parameters.curr_face_detector = LandmarkDetector::FaceModelParameters::HOG_SVM_DETECTOR;
    Utilities::Visualizer visualizer(arguments);

    cv::Mat rgb_image = reader.GetNextImage();
    Utilities::RecorderOpenFaceParameters recording(arguments, false, false, reader.fx, reader.fy, reader.cx,
                                                    reader.cy);
    if (!model.eye_model) recording.setOutputGaze(false);
    Utilities::RecorderOpenFace recorder(reader.name, recording, arguments);
    visualizer.SetImage(rgb_image, reader.fx, reader.fy, reader.cx, reader.cy);
    cv::Mat_<uchar> grayscale_image = reader.GetGrayFrame();

    std::vector<cv::Rect_<float>> faces;
    if (reader.has_bounding_boxes) {
        faces = reader.GetBoundingBoxes();
    } else if (parameters.curr_face_detector == LandmarkDetector::FaceModelParameters::HOG_SVM_DETECTOR) {
        std::vector<float> confidences;
        LandmarkDetector::DetectFacesHOG(faces, grayscale_image, models.hog_detector(), confidences);
    } else if (parameters.curr_face_detector == LandmarkDetector::FaceModelParameters::HAAR_DETECTOR) {
        LandmarkDetector::DetectFaces(faces, grayscale_image, models.haar_detector());
    } else {
        std::vector<float> confidences;
        LandmarkDetector::DetectFacesMTCNN(faces, rgb_image, models.mtcnn_detector(), confidences);
    }

    for (size_t face = 0; face < faces.size(); ++face) {
        LandmarkDetector::DetectLandmarksInImage(rgb_image, faces[face], model, parameters, grayscale_image);
        cv::Vec6d pose = LandmarkDetector::GetPose(model, reader.fx, reader.fy, reader.cx, reader.cy);
        cv::Point3f gaze0(0, 0, -1), gaze1(0, 0, -1);
        cv::Vec2f gaze_angle(0, 0);
        if (model.eye_model) {
            GazeAnalysis::EstimateGaze(model, gaze0, reader.fx, reader.fy, reader.cx, reader.cy, true);
            GazeAnalysis::EstimateGaze(model, gaze1, reader.fx, reader.fy, reader.cx, reader.cy, false);
            gaze_angle = GazeAnalysis::GetGazeAngle(gaze0, gaze1);
        }
        cv::Mat aligned;
        cv::Mat_<double> hog;
        int hog_rows = 0, hog_cols = 0;
        if (recording.outputAlignedFaces() || recording.outputHOG() || recording.outputAUs() ||
            visualizer.vis_align || visualizer.vis_hog) {
            analyser.PredictStaticAUsAndComputeFeatures(rgb_image, model.detected_landmarks);
            analyser.GetLatestAlignedFace(aligned);
            analyser.GetLatestHOG(hog, hog_rows, hog_cols);
        }
        const auto eye_landmarks = LandmarkDetector::CalculateAllEyeLandmarks(model);
        const auto eye_landmarks_3d =
            LandmarkDetector::Calculate3DEyeLandmarks(model, reader.fx, reader.fy, reader.cx, reader.cy);
        visualizer.SetObservationFaceAlign(aligned);
        visualizer.SetObservationHOG(hog, hog_rows, hog_cols);
        visualizer.SetObservationLandmarks(model.detected_landmarks, 1.0, model.GetVisibilities());
        visualizer.SetObservationPose(pose, 1.0);
        visualizer.SetObservationGaze(gaze0, gaze1, eye_landmarks, eye_landmarks_3d, model.detection_certainty);
        visualizer.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());

        recorder.SetObservationHOG(model.detection_success, hog, hog_rows, hog_cols, 31);
        recorder.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());
        recorder.SetObservationLandmarks(model.detected_landmarks,
                                         model.GetShape(reader.fx, reader.fy, reader.cx, reader.cy),
                                         model.params_global, model.params_local, model.detection_certainty,
                                         model.detection_success);
        recorder.SetObservationPose(pose);
        recorder.SetObservationGaze(gaze0, gaze1, gaze_angle, eye_landmarks, eye_landmarks_3d);
        recorder.SetObservationFaceAlign(aligned);
        recorder.SetObservationFaceID(static_cast<int>(face));
        recorder.WriteObservation();
    }
    if (!faces.empty()) visualizer.ShowObservation();
    recorder.SetObservationVisualization(visualizer.GetVisImage());
    recorder.WriteObservationTracked();
    recorder.Close();

    reply.faces = static_cast<int>(faces.size());
    reply.frames = 1;
    reply.outputs = outputs_of(request);
    return reply;
}

Reply analyse_video(ResidentModels& models, const Request& request, const Progress& progress) {
    Reply reply;
    reply.id = request.id;
    std::vector<std::string> arguments = command_line(models, "FeatureExtraction", request);
    LandmarkDetector::FaceModelParameters parameters = landmark_parameters(arguments);
    LandmarkDetector::CLNF model = models.landmark_model(parameters.model_location);
    FaceAnalysis::FaceAnalyserParameters analyser_parameters(arguments);
    FaceAnalysis::FaceAnalyser& analyser = models.video_analyser();
    analyser.Reset();  // a video starts with no history of frames

    Utilities::SequenceCapture reader;
    Utilities::Visualizer visualizer(arguments);
    Utilities::FpsTracker fps;
    fps.AddFrame();
    if (!reader.Open(arguments)) {
        reply.status = "unreadable";
        reply.message = "could not open the video";
        return reply;
    }
    Utilities::RecorderOpenFaceParameters recording(arguments, true, reader.IsWebcam(), reader.fx, reader.fy,
                                                    reader.cx, reader.cy, reader.fps);
    if (!model.eye_model) recording.setOutputGaze(false);
    Utilities::RecorderOpenFace recorder(reader.name, recording, arguments);

    cv::Mat frame = reader.GetNextFrame();
    double reported = 0;
    while (!frame.empty()) {
        cv::Mat_<uchar> grayscale_image = reader.GetGrayFrame();
        const bool success = LandmarkDetector::DetectLandmarksInVideo(frame, model, parameters, grayscale_image);
        cv::Point3f gaze0(0, 0, 0), gaze1(0, 0, 0);
        cv::Vec2d gaze_angle(0, 0);
        if (success && model.eye_model) {
            GazeAnalysis::EstimateGaze(model, gaze0, reader.fx, reader.fy, reader.cx, reader.cy, true);
            GazeAnalysis::EstimateGaze(model, gaze1, reader.fx, reader.fy, reader.cx, reader.cy, false);
            gaze_angle = GazeAnalysis::GetGazeAngle(gaze0, gaze1);
        }
        cv::Mat aligned;
        cv::Mat_<double> hog;
        int hog_rows = 0, hog_cols = 0;
        if (recording.outputAlignedFaces() || recording.outputHOG() || recording.outputAUs() ||
            visualizer.vis_align || visualizer.vis_hog || visualizer.vis_aus) {
            analyser.AddNextFrame(frame, model.detected_landmarks, model.detection_success, reader.time_stamp,
                                  reader.IsWebcam());
            analyser.GetLatestAlignedFace(aligned);
            analyser.GetLatestHOG(hog, hog_rows, hog_cols);
        }
        cv::Vec6d pose = LandmarkDetector::GetPose(model, reader.fx, reader.fy, reader.cx, reader.cy);
        fps.AddFrame();
        const auto eye_landmarks = LandmarkDetector::CalculateAllEyeLandmarks(model);
        const auto eye_landmarks_3d =
            LandmarkDetector::Calculate3DEyeLandmarks(model, reader.fx, reader.fy, reader.cx, reader.cy);
        visualizer.SetImage(frame, reader.fx, reader.fy, reader.cx, reader.cy);
        visualizer.SetObservationFaceAlign(aligned);
        visualizer.SetObservationHOG(hog, hog_rows, hog_cols);
        visualizer.SetObservationLandmarks(model.detected_landmarks, model.detection_certainty,
                                           model.GetVisibilities());
        visualizer.SetObservationPose(pose, model.detection_certainty);
        visualizer.SetObservationGaze(gaze0, gaze1, eye_landmarks, eye_landmarks_3d, model.detection_certainty);
        visualizer.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());
        visualizer.SetFps(fps.GetFPS());
        visualizer.ShowObservation();

        recorder.SetObservationHOG(success, hog, hog_rows, hog_cols, 31);
        recorder.SetObservationVisualization(visualizer.GetVisImage());
        recorder.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());
        recorder.SetObservationLandmarks(model.detected_landmarks,
                                         model.GetShape(reader.fx, reader.fy, reader.cx, reader.cy),
                                         model.params_global, model.params_local, model.detection_certainty,
                                         success);
        recorder.SetObservationPose(pose);
        recorder.SetObservationGaze(gaze0, gaze1, gaze_angle, eye_landmarks, eye_landmarks_3d);
        recorder.SetObservationTimestamp(reader.time_stamp);
        recorder.SetObservationFaceID(0);
        recorder.SetObservationFrameNumber(static_cast<int>(reader.GetFrameNumber()));
        recorder.SetObservationFaceAlign(aligned);
        recorder.WriteObservation();
        recorder.WriteObservationTracked();

        reply.frames += 1;
        reply.faces += success ? 1 : 0;
        report_progress(reader, reported, progress);
        frame = reader.GetNextFrame();
    }
    recorder.Close();
    reader.Close();
    // Post-processing reads the CSV back, and fails on one without frames.
    if (recording.outputAUs() && reply.frames > 0) analyser.PostprocessOutputFile(recorder.GetCSVFile());
    analyser.Reset();
    reply.outputs = outputs_of(request);
    return reply;
}

Reply analyse_multi_face(ResidentModels& models, const Request& request, const Progress& progress) {
    Reply reply;
    reply.id = request.id;
    std::vector<std::string> arguments = command_line(models, "FaceLandmarkVidMulti", request);
    LandmarkDetector::FaceModelParameters base = landmark_parameters(arguments);
    base.reinit_video_every = -1;  // trackers are re-initialised from detections only
    base.curr_face_detector = LandmarkDetector::FaceModelParameters::MTCNN_DETECTOR;

    constexpr int most_faces = 4;
    LandmarkDetector::CLNF first = models.multi_face_model(base.model_location);
    std::vector<LandmarkDetector::FaceModelParameters> parameters{base};
    if (parameters[0].curr_face_detector == LandmarkDetector::FaceModelParameters::MTCNN_DETECTOR &&
        first.face_detector_MTCNN.empty())
        parameters[0].curr_face_detector = LandmarkDetector::FaceModelParameters::HOG_SVM_DETECTOR;
    std::vector<LandmarkDetector::CLNF> trackers;
    trackers.reserve(most_faces);
    std::vector<bool> active(most_faces, false);
    for (int i = 0; i < most_faces; ++i) {
        trackers.push_back(first);
        if (i > 0) parameters.push_back(base);
    }
    FaceAnalysis::FaceAnalyserParameters analyser_parameters(arguments);
    FaceAnalysis::FaceAnalyser& analyser = models.static_analyser();

    Utilities::SequenceCapture reader;
    Utilities::Visualizer visualizer(arguments);
    Utilities::FpsTracker fps;
    fps.AddFrame();
    if (!reader.Open(arguments)) {
        reply.status = "unreadable";
        reply.message = "could not open the video";
        return reply;
    }
    cv::Mat frame = reader.GetNextFrame();
    Utilities::RecorderOpenFaceParameters recording(arguments, true, reader.IsWebcam(), reader.fx, reader.fy,
                                                    reader.cx, reader.cy, reader.fps);
    if (!first.eye_model) recording.setOutputGaze(false);
    Utilities::RecorderOpenFace recorder(reader.name, recording, arguments);

    std::vector<bool> seen(most_faces, false);
    double reported = 0;
    int frame_count = 0;
    while (!frame.empty()) {
        cv::Mat_<uchar> grayscale_image = reader.GetGrayFrame();
        std::vector<cv::Rect_<float>> detections;
        const bool all_active = std::all_of(active.begin(), active.end(), [](bool on) { return on; });
        if (frame_count % 8 == 0 && !all_active) {
            if (parameters[0].curr_face_detector == LandmarkDetector::FaceModelParameters::HOG_SVM_DETECTOR) {
                std::vector<float> confidences;
                LandmarkDetector::DetectFacesHOG(detections, grayscale_image, trackers[0].face_detector_HOG,
                                                 confidences);
            } else if (parameters[0].curr_face_detector == LandmarkDetector::FaceModelParameters::HAAR_DETECTOR) {
                LandmarkDetector::DetectFaces(detections, grayscale_image, trackers[0].face_detector_HAAR);
            } else {
                std::vector<float> confidences;
                LandmarkDetector::DetectFacesMTCNN(detections, frame, trackers[0].face_detector_MTCNN,
                                                   confidences);
            }
        }
        drop_tracked(trackers, detections);
        std::vector<bool> taken(detections.size(), false);
        for (int i = 0; i < most_faces; ++i) {
            if (trackers[i].failures_in_a_row > 4) {
                active[i] = false;
                trackers[i].Reset();
            }
            if (!active[i]) {
                for (size_t d = 0; d < detections.size(); ++d) {
                    if (taken[d]) continue;
                    taken[d] = true;
                    trackers[i].Reset();
                    trackers[i].detection_success = false;  // a wider window for the first fit
                    LandmarkDetector::DetectLandmarksInVideo(frame, detections[d], trackers[i], parameters[i],
                                                             grayscale_image);
                    active[i] = true;
                    break;
                }
            } else {
                LandmarkDetector::DetectLandmarksInVideo(frame, trackers[i], parameters[i], grayscale_image);
            }
        }
        drop_duplicate_trackers(trackers, active);
        fps.AddFrame();
        visualizer.SetImage(frame, reader.fx, reader.fy, reader.cx, reader.cy);
        for (int i = 0; i < most_faces; ++i) {
            if (!active[i]) continue;
            LandmarkDetector::CLNF& model = trackers[i];
            cv::Vec6d pose = LandmarkDetector::GetPose(model, reader.fx, reader.fy, reader.cx, reader.cy);
            cv::Point3f gaze0(0, 0, 0), gaze1(0, 0, 0);
            cv::Vec2d gaze_angle(0, 0);
            if (model.detection_success && first.eye_model) {
                GazeAnalysis::EstimateGaze(model, gaze0, reader.fx, reader.fy, reader.cx, reader.cy, true);
                GazeAnalysis::EstimateGaze(model, gaze1, reader.fx, reader.fy, reader.cx, reader.cy, false);
                gaze_angle = GazeAnalysis::GetGazeAngle(gaze0, gaze1);
            }
            cv::Mat aligned;
            cv::Mat_<double> hog;
            int hog_rows = 0, hog_cols = 0;
            if (recording.outputAlignedFaces() || recording.outputHOG() || recording.outputAUs() ||
                visualizer.vis_align || visualizer.vis_hog) {
                analyser.PredictStaticAUsAndComputeFeatures(frame, model.detected_landmarks);
                analyser.GetLatestAlignedFace(aligned);
                analyser.GetLatestHOG(hog, hog_rows, hog_cols);
            }
            visualizer.SetObservationFaceAlign(aligned);
            visualizer.SetObservationHOG(hog, hog_rows, hog_cols);
            visualizer.SetObservationLandmarks(model.detected_landmarks, model.detection_certainty);
            visualizer.SetObservationPose(LandmarkDetector::GetPose(model, reader.fx, reader.fy, reader.cx, reader.cy),
                                          model.detection_certainty);
            visualizer.SetObservationGaze(
                gaze0, gaze1, LandmarkDetector::CalculateAllEyeLandmarks(model),
                LandmarkDetector::Calculate3DEyeLandmarks(model, reader.fx, reader.fy, reader.cx, reader.cy),
                model.detection_certainty);
            visualizer.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());

            recorder.SetObservationHOG(model.detection_success, hog, hog_rows, hog_cols, 31);
            recorder.SetObservationActionUnits(analyser.GetCurrentAUsReg(), analyser.GetCurrentAUsClass());
            recorder.SetObservationLandmarks(model.detected_landmarks,
                                             model.GetShape(reader.fx, reader.fy, reader.cx, reader.cy),
                                             model.params_global, model.params_local, model.detection_certainty,
                                             model.detection_success);
            recorder.SetObservationPose(pose);
            recorder.SetObservationGaze(
                gaze0, gaze1, gaze_angle, LandmarkDetector::CalculateAllEyeLandmarks(model),
                LandmarkDetector::Calculate3DEyeLandmarks(model, reader.fx, reader.fy, reader.cx, reader.cy));
            recorder.SetObservationFaceAlign(aligned);
            recorder.SetObservationFaceID(i);
            recorder.SetObservationTimestamp(reader.time_stamp);
            recorder.SetObservationFrameNumber(static_cast<int>(reader.GetFrameNumber()));
            recorder.WriteObservation();
            seen[i] = true;
        }
        visualizer.SetFps(fps.GetFPS());
        recorder.SetObservationVisualization(visualizer.GetVisImage());
        recorder.WriteObservationTracked();
        visualizer.ShowObservation();

        report_progress(reader, reported, progress);
        reply.frames += 1;
        frame_count++;
        frame = reader.GetNextFrame();
    }
    recorder.Close();
    reader.Close();
    reply.faces = static_cast<int>(std::count(seen.begin(), seen.end(), true));
    reply.outputs = outputs_of(request);
    return reply;
}

}  // namespace engine
