"""A worker whose handler raises on bad input; HANDLER=generator: a sync generator that raises
part-way."""

import runpod


def handler(job):
    job_input = job["input"]
    if job_input.get("number") is None:
        raise ValueError("number is required")
    return {"square": job_input["number"] ** 2}


def generator_handler(job):
    for n in range(job["input"].get("count", 3)):
        if n == job["input"].get("raise_at"):
            raise RuntimeError(f"failed at {n}")
        yield {"n": n}


if __name__ == "__main__":
    import os
    chosen = generator_handler if os.environ.get("HANDLER") == "generator" else handler
    runpod.serverless.start({"handler": chosen})
