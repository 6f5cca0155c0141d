"""Run by .venv-sdk's Python for scripts/bench.py: Roboflow's SDK on a video, as its docs show.

usage: sdk_video_worker.py MODE API_URL MODEL_ID VIDEO SECONDS OUT
MODE:
  loop-recorded  OpenCV reads every frame, `client.infer(frame)` for each, in a loop
  process-video  supervision's `process_video` with the SDK called in the callback,
                 annotating and writing OUT
  loop-live      the same loop against a camera: each iteration takes the frame the
                 camera would show now (the file paced at its fps), for SECONDS
Prints JSON: frames, seconds, cpu_s, max_rss_mb, and for loop-live a time series.
"""

import json
import resource
import sys
import time

import cv2
import supervision as sv
from inference_sdk import InferenceHTTPClient


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _usage(cpu_at_start: float) -> dict:
    """CPU since the work began (not the imports), peak RSS."""
    return {
        "cpu_s": _cpu() - cpu_at_start,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def loop_recorded(client: InferenceHTTPClient, model_id: str, video: str) -> dict:
    capture = cv2.VideoCapture(video)
    frames = 0
    started = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        client.infer(frame, model_id=model_id)
        frames += 1
    return {"frames": frames, "seconds": time.perf_counter() - started}


def process_video(client: InferenceHTTPClient, model_id: str, video: str, out: str) -> dict:
    box = sv.BoxAnnotator()
    frames = [0]

    def callback(frame, index):
        result = client.infer(frame, model_id=model_id)
        frames[0] += 1
        return box.annotate(frame.copy(), sv.Detections.from_inference(result))

    started = time.perf_counter()
    sv.process_video(source_path=video, target_path=out, callback=callback)
    return {"frames": frames[0], "seconds": time.perf_counter() - started}


def loop_live(client: InferenceHTTPClient, model_id: str, video: str, seconds: float) -> dict:
    capture = cv2.VideoCapture(video)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    count = max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    position = -1
    series = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        # A camera shows frame floor(t * fps) now (the clip loops, as a camera goes on):
        # skip to it, as the freshest-frame buffer of a camera would.
        tick = int((time.perf_counter() - started) * fps)
        wanted = tick % count
        if wanted < position:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            position = -1
        while position < wanted and capture.grab():
            position += 1
        ok, frame = capture.retrieve()
        if not ok:
            break
        client.infer(frame, model_id=model_id)
        done = time.perf_counter()
        series.append({"t": done - started, "age_ms": (done - (started + tick / fps)) * 1000})
    return {"frames": len(series), "seconds": time.perf_counter() - started, "series": series}


def main() -> None:
    mode, api_url, model_id, video, seconds, out = sys.argv[1:7]
    client = InferenceHTTPClient(api_url=api_url, api_key="bench")
    client.select_api_v0()  # the hosted API's route: one request per frame
    cpu_at_start = _cpu()
    if mode == "loop-recorded":
        result = loop_recorded(client, model_id, video)
    elif mode == "process-video":
        result = process_video(client, model_id, video, out)
    elif mode == "loop-live":
        result = loop_live(client, model_id, video, float(seconds))
    else:
        raise SystemExit(f"unknown mode {mode}")
    result.update(_usage(cpu_at_start))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
