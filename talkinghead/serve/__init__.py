"""Serving: the HTTP API with a job queue (api.py, local.py, redis_queue.py), batch submission
(batch.py) and the web app (app.py). Everything here calls talkinghead.pipelines only; jobs
run in child processes (runner.py, executor.py) so a timeout or a crash stays in its job."""
