"""A vLLM-style worker: an async generator streams tokens; several jobs at once."""

import asyncio

import runpod


async def handler(job):
    job_input = job["input"]
    words = job_input.get("prompt", "hello streaming world").split()
    for index, word in enumerate(words):
        await asyncio.sleep(0.01)
        yield {"index": index, "token": word}
    if job_input.get("fail_at_end"):
        yield {"error": "the model stopped early"}


def adjust_concurrency(current_concurrency):
    return 4


runpod.serverless.start({
    "handler": handler,
    "concurrency_modifier": adjust_concurrency,
    "return_aggregate_stream": True,
})
