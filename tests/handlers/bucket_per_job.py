"""A worker that uploads its file to the bucket the job names (the request's s3Config)."""

import os

import runpod
from runpod.serverless.utils import rp_upload


def handler(job):
    job_input = job["input"]
    path = f"/tmp/{job['id']}.txt"
    with open(path, "w", encoding="utf-8") as out:
        out.write(job_input.get("text", ""))

    bucket_creds = job.get("s3Config")
    if not bucket_creds:
        return {"error": "this worker needs an s3Config with the request"}
    url = rp_upload.upload_file_to_bucket(
        f"{job['id']}.txt", path, bucket_creds=bucket_creds,
        bucket_name=bucket_creds["bucketName"], prefix="outputs",
    )
    os.remove(path)
    return {"images": [{"image": url}], "bucket": bucket_creds["bucketName"]}


runpod.serverless.start({"handler": handler})
