"""A ComfyUI-style worker: reports progress, fails with an error object, refreshes itself."""

import runpod


def handler(job):
    job_input = job["input"]
    runpod.serverless.progress_update(job, f"Working on {job_input.get('workflow', 'default')}")

    if job_input.get("workflow") == "broken":
        return {"error": {"node": "KSampler", "message": "Value not in list"}}

    result = {"status": "success", "workflow": job_input.get("workflow", "default")}
    if job_input.get("refresh"):
        result["refresh_worker"] = True
    return result


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
