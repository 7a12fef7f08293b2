"""How close Assay gets to ideal parallelism on a latency-bound task.

Workload (issue 2): 500 records x 5 runs, a task that sleeps 50 ms, jobs=16. The ideal is
2,500 x 0.05 s / 16 = 7.8 s; prints the measured time and the efficiency (ideal / measured),
target at least 95%.

    python benchmarks/concurrency.py [--records 500] [--runs 5] [--jobs 16] [--sleep 0.05]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

SLEEP = 0.05


def task(input_data: Any, config: dict[str, Any]) -> Any:
    time.sleep(config["sleep"])
    return input_data


def same(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return bool(output_data == input_data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=SLEEP)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["ASSAY_HOME"] = folder
        os.environ["ASSAY_PROGRESS"] = "0"
        from assay import LLMObs

        LLMObs.enable(project_name="benchmark")
        dataset = LLMObs.create_dataset(
            dataset_name="concurrency",
            records=[{"input_data": i} for i in range(arguments.records)],
        )
        experiment = LLMObs.experiment(
            "concurrency",
            task,
            dataset,
            [same],
            config={"sleep": arguments.sleep},
            runs=arguments.runs,
        )
        started = time.perf_counter()
        experiment.run(jobs=arguments.jobs)
        elapsed = time.perf_counter() - started
        LLMObs.disable()
    ideal = arguments.records * arguments.runs * arguments.sleep / arguments.jobs
    efficiency = ideal / elapsed
    print(
        f"workload: {arguments.records} records x {arguments.runs} runs, "
        f"{arguments.sleep * 1000:.0f} ms task, jobs={arguments.jobs}"
    )
    print(f"ideal {ideal:.2f} s, measured {elapsed:.2f} s")
    verdict = "OK" if efficiency >= 0.95 else "MISSED"
    print(f"efficiency: {efficiency:.1%} (target >= 95%) -> {verdict}")


if __name__ == "__main__":
    main()
