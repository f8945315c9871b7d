"""The Ray engine: the same two stages as the local engine, spread over a Ray cluster.

The inputs become a Ray Dataset; decode+prepare (``api.stage_video``) runs as CPU map tasks, one
video per task, and generation runs in an actor pool (one model per actor, one GPU per actor
where the cluster has GPUs). Rows stream back to the driver, which alone writes per-video files
and appends records through the same :class:`~videovlm.batch.Recorder`, so ``results.jsonl``
has the same contract as with the local engine: crash-safe, resumable, one line per input.
A long video's map task is its probe and cuts (``api.stage_video``'s ``WindowedVideo``); its
actor then decodes and describes its windows one at a time. Its finished windows are not kept
(the output folder is the driver's): a video interrupted there is redone whole on resume.

Payloads cross process boundaries pickled: ``VideoInputs`` and ``Result`` are plain data. Ray's
own ``read_videos`` is not used: it yields one row per frame and decodes every frame, while the
selection rule needs only the planned ones.

On a cluster (the video folder and the model must be at the same paths on every node, e.g. a
shared filesystem; the output folder is written by the driver only)::

    ray start --head --num-cpus 16                      # on the head node
    ray start --address HEAD_IP:6379                    # on each worker node (GPUs found)
    RAY_ADDRESS=HEAD_IP:6379 videovlm batch /shared/videos -o out --engine ray --model /shared/m

Without ``RAY_ADDRESS`` a local cluster is started for the run and stopped after it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from videovlm.batch import (
    BatchReport,
    Interrupts,
    Job,
    Questions,
    Recorder,
    VideoStages,
    error_result,
    prepare_run,
    progress_bar,
)
from videovlm.errors import ModelError, VideoVLMError
from videovlm.interrupts import signum_of
from videovlm.model import Model, default_model_id, resolve

_DECODE_MEMORY = 512 * 2**20  # bytes a decode task may hold: 50 frames at 1080p and their copies


def _quiet_ray_data() -> None:
    """Our progress bar and summary are the batch's; Ray Data's own would interleave with them."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def model_image_size(model_id: str | None) -> int:
    """The model's single-image size, read from its processor config without loading weights,
    so the driver (often a machine without a GPU) can set up the CPU stage."""
    model_id = model_id or default_model_id()
    folder, _ = resolve(model_id)
    try:
        config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        return int(config["max_image_size"]["longest_edge"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{model_id}: no max_image_size.longest_edge in its "
                         "preprocessor_config.json; is it a SmolVLM checkpoint?") from None


def _cpu_row(row: dict[str, Any], stages: VideoStages) -> dict[str, Any]:
    """A Ray map task: one video's CPU stage; a failure travels on as the row's error."""
    job = Job(Path(row["path"]), row["input"])
    start = time.perf_counter()
    try:
        payload, error = pickle.dumps(stages.cpu(job)), b""
    except Exception as exc:
        payload, error = b"", pickle.dumps(error_result(job, exc))
    return {**row, "payload": payload, "error": error, "cpu_s": time.perf_counter() - start}


class _Generate:
    """The actor: loads the model once, then runs the model stage for each row it is given."""

    def __init__(self, stages: VideoStages, model_id: str | None, device: str | None,
                 dtype: str | None, cache: bool = True, quantize: str | None = None) -> None:
        self.stages = stages
        self.model = Model.load(model_id, device=device, dtype=dtype, quantize=quantize,
                                cache=cache)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results, model_s = [], []
        for path, rel, payload, error in zip(batch["path"], batch["input"], batch["payload"],
                                             batch["error"], strict=True):
            start = time.perf_counter()
            if error:
                results.append(bytes(error))
            else:
                job = Job(Path(path), rel)
                try:
                    result = self.stages.model(self.model, job, pickle.loads(payload))
                except Exception as exc:
                    result = error_result(job, exc)
                results.append(pickle.dumps(result))
            model_s.append(time.perf_counter() - start)
        return {"path": batch["path"], "input": batch["input"], "cpu_s": batch["cpu_s"],
                "result": results, "model_s": model_s}


def _start_ray(num_cpus: int | None) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local cluster; True when we started it (and so
    stop it). Ray's session files go to a fresh folder under the system temp dir, never into
    the user's tree; the dashboard is off (nothing to serve on a batch run)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
    else:
        temp = tempfile.mkdtemp(prefix="vvray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp, **kwargs)
    return True


def run_ray(
    jobs: Sequence[Job],
    recipe: Any,
    out_dir: str | os.PathLike[str],
    *,
    model_id: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    n: int | None = None,
    backend: str | None = None,
    questions: Questions | None = None,
    choice_recipe: Any = None,
    formats: Sequence[str] = (),
    resume: bool | str = True,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    actors: int | None = None,
    num_cpus: int | None = None,
    cache: bool = True,
    quantize: str | None = None,
) -> BatchReport:
    """Run the batch on Ray: same inputs, records and resume as :func:`videovlm.batch.run_local`.

    ``actors`` model replicas (default: one per GPU in the cluster, or one); ``num_cpus`` caps a
    local cluster (ignored with ``RAY_ADDRESS``).
    """
    try:
        import ray
        from ray.data import ActorPoolStrategy
    except ImportError:
        raise VideoVLMError("--engine ray needs Ray Data: pip install 'videovlm[ray]'") from None

    image_size = model_image_size(model_id)  # a missing model fails before anything is written
    stages = VideoStages(recipe, image_size=image_size, n=n, backend=backend,
                         questions=questions, choice_recipe=choice_recipe)
    prep = prepare_run(jobs, out_dir, resume=resume, settings=settings)
    report = BatchReport(total=prep.total, skipped=prep.skipped,
                         failed_before=prep.failed_before, results=prep.log.path)
    bar = progress_bar(prep.total, prep.skipped, progress)
    say = say or (lambda text: bar.write(f"videovlm: {text}", file=sys.stderr))
    recorder = Recorder(prep.out_dir, prep.log, formats)
    start = time.perf_counter()
    started = False
    try:
        with Interrupts(say) as interrupts:
            if prep.todo:
                started = _start_ray(num_cpus)
                _quiet_ray_data()
                gpus = int(ray.cluster_resources().get("GPU", 0))
                size = actors or max(1, gpus)
                items = [{"path": str(j.path), "input": j.input} for j in prep.todo]
                ds = ray.data.from_items(items, override_num_blocks=len(items))
                # The memory hint (a decoded video's frames) also keeps Ray from fusing this
                # map into the actors: fused, decoding would run inside the model's actor and
                # never overlap generation.
                ds = ds.map(_cpu_row, fn_kwargs={"stages": stages}, num_cpus=1,
                            memory=_DECODE_MEMORY)
                ds = ds.map_batches(
                    _Generate, fn_constructor_kwargs={"stages": stages, "model_id": model_id,
                                                      "device": device, "dtype": dtype,
                                                      "cache": cache, "quantize": quantize},
                    batch_size=1, compute=ActorPoolStrategy(size=size),
                    num_gpus=1 if gpus else 0, num_cpus=1)
                for row in ds.iter_rows():
                    job = Job(Path(row["path"]), row["input"])
                    report.cpu_s += float(row["cpu_s"])
                    report.model_s += float(row["model_s"])
                    with interrupts.commit():
                        record = recorder.commit(job, pickle.loads(row["result"]))
                    report.count(record, say)
                    bar.set_postfix_str(f"failed={report.failed} {job.input}", refresh=False)
                    bar.update(1)
                    if interrupts.stop:
                        report.interrupted = report.done + report.failed < len(prep.todo)
                        report.signum = interrupts.signum
                        break
    except KeyboardInterrupt as exc:
        report.interrupted = True
        report.signum = signum_of(exc)
    finally:
        bar.close()
        prep.close()
        if started:
            ray.shutdown()
        report.wall_s = time.perf_counter() - start
    return report
