"""A handler file written for RunPod's SDK, run unchanged as podworker's model.

    sdk.py           the official ``runpod`` package: imported (one clear error when absent),
                     its ``serverless.start`` and ``progress_update`` taken over
    handler_file.py  runs the file as ``__main__`` with its own flags; ``start(config)`` hands
                     the handler and its config over instead of starting the SDK's loop
    sdk_results.py   what a handler returns, read as the SDK reads it (``{"error": ...}``,
                     ``refresh_worker``, error chunks in a stream)
    model.py         ``HandlerModel``: the ``Model`` port around the handler
"""
