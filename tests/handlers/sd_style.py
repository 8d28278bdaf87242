"""A Stable Diffusion style worker: validate the input, make images, upload them, clean up."""

import argparse
import os
import struct
import zlib

import runpod
from runpod.serverless.utils import rp_cleanup, rp_upload
from runpod.serverless.utils.rp_validator import validate

parser = argparse.ArgumentParser()
parser.add_argument("--model_tag", type=str, default="sd-1.5")
args = parser.parse_args()

logger = runpod.RunPodLogger()

INPUT_SCHEMA = {
    "prompt": {"type": str, "required": True},
    "width": {"type": int, "required": False, "default": 8,
              "constraints": lambda width: width in [8, 16, 32]},
    "height": {"type": int, "required": False, "default": 8,
               "constraints": lambda height: height in [8, 16, 32]},
    "num_outputs": {"type": int, "required": False, "default": 1,
                    "constraints": lambda n: 0 < n < 4},
    "seed": {"type": int, "required": False, "default": 42},
}


def png(width, height, shade):
    """A grey PNG of the given size (stands in for the diffusion model's image)."""
    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def run(job):
    job_input = job["input"]

    validated_input = validate(job_input, INPUT_SCHEMA)
    if "errors" in validated_input:
        return {"error": validated_input["errors"]}
    job_input = validated_input["validated_input"]

    logger.info(f"generating {job_input['num_outputs']} image(s)", job["id"])
    os.makedirs(f"/tmp/{job['id']}", exist_ok=True)
    job_output = []
    for index in range(job_input["num_outputs"]):
        path = f"/tmp/{job['id']}/{index}.png"
        with open(path, "wb") as image:
            image.write(png(job_input["width"], job_input["height"],
                            (job_input["seed"] + index) % 256))
        image_url = rp_upload.upload_image(job["id"], path)
        job_output.append({"image": image_url, "seed": job_input["seed"] + index})

    rp_cleanup.clean(["input_objects"])
    return {"images": job_output, "model_tag": args.model_tag}


if __name__ == "__main__":
    runpod.serverless.start({"handler": run})
