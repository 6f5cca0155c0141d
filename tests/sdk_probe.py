"""Run by .venv-sdk's Python: call Roboflow's inference_sdk as its docs show, print JSON.

usage: sdk_probe.py API_URL MODEL_ID IMAGE_PATH MODE [CONFIDENCE]
MODE: v1 (the SDK's default for non-Roboflow URLs), v0 (the hosted API's route),
workflow (run_workflow on workspace "local", workflow MODEL_ID).
"""

import json
import sys

from inference_sdk import InferenceConfiguration, InferenceHTTPClient


def main() -> None:
    api_url, model_id, image_path, mode = sys.argv[1:5]
    confidence = float(sys.argv[5]) if len(sys.argv) > 5 else None
    client = InferenceHTTPClient(api_url=api_url, api_key="sdk-test-key")
    if confidence is not None:
        client.configure(InferenceConfiguration(confidence_threshold=confidence))
    if mode == "v0":
        client.select_api_v0()
        result = client.infer(image_path, model_id=model_id)
    elif mode == "v1":
        result = client.infer(image_path, model_id=model_id)
    elif mode == "workflow":
        result = client.run_workflow(
            workspace_name="local", workflow_id=model_id, images={"image": image_path}
        )
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
