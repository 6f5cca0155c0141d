"""Run by .venv-sdk's Python for scripts/bench_sender.py: Roboflow's SDK as its docs show.

usage: sdk_bench_worker.py API_URL MODEL_ID SECONDS CONCURRENCY
CONCURRENCY 0: one `infer` per frame in a loop. N >= 1: the SDK's own concurrency,
`max_concurrent_requests=N`, fed N frames per `infer` call. Prints JSON.
"""

import json
import sys
import time

import cv2
import numpy as np
from inference_sdk import InferenceConfiguration, InferenceHTTPClient


def main() -> None:
    api_url, model_id, seconds_text, concurrency_text = sys.argv[1:5]
    seconds, concurrency = float(seconds_text), int(concurrency_text)
    frame = np.full((360, 640, 3), 40, np.uint8)
    cv2.circle(frame, (200, 180), 50, (0, 0, 255), -1)
    client = InferenceHTTPClient(api_url=api_url, api_key="bench")
    client.select_api_v0()  # the hosted API's route: one request per frame
    if concurrency:
        client.configure(InferenceConfiguration(max_concurrent_requests=concurrency))
    client.infer(frame, model_id=model_id)  # warm up
    frames = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if concurrency:
            client.infer([frame] * concurrency, model_id=model_id)
            frames += concurrency
        else:
            client.infer(frame, model_id=model_id)
            frames += 1
    print(json.dumps({"frames": frames, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
